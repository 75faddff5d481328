package fsm

import (
	"errors"
	"fmt"
)

// Errors that commands and reads wrap; the handler maps them to status codes with errors.Is.
var (
	// ErrInvalidCommand: the entry or command is malformed (undecodable, no kind, missing time).
	ErrInvalidCommand = errors.New("invalid command")
	// ErrInvalidArgument: a field is out of range (node id 0, bad role, empty address...).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrInvalidChannelID: the channel id does not match [A-Za-z0-9_.:@-]{1,128}.
	ErrInvalidChannelID = errors.New("invalid channel id")
	// ErrChannelLimit: creating the channel would pass the cluster's channel cap.
	ErrChannelLimit = errors.New("channel limit reached")
	// ErrUnknownNode: no node has this id.
	ErrUnknownNode = errors.New("unknown node")
	// ErrAddressConflict: the node id is registered with another address and is not dead.
	ErrAddressConflict = errors.New("node registered with another address")
	// ErrRoleConflict: the node id is registered with another role.
	ErrRoleConflict = errors.New("node registered with another role")
	// ErrInsufficientReplicas: fewer alive replica nodes than the replication factor.
	ErrInsufficientReplicas = errors.New("not enough alive replica nodes")
	// ErrUnknownChannel: no channel has this id.
	ErrUnknownChannel = errors.New("unknown channel")
	// ErrStaleEpoch: the channel's epoch is not the expected one.
	ErrStaleEpoch = errors.New("stale epoch")
	// ErrNotSlotOwner: the requester does not own the channel's slot.
	ErrNotSlotOwner = errors.New("slot not owned by requester")
	// ErrInvalidChange: the change itself is inconsistent (leader outside the replica set,
	// leader term or last sequence going backwards, unknown replica...).
	ErrInvalidChange = errors.New("invalid channel change")
	// ErrCompacted: the watch history no longer holds the requested revision; the error is a
	// *CompactedError saying from where resuming still works.
	ErrCompacted = errors.New("revision compacted")
	// ErrInvalidSnapshot: Restore was given bytes that are not a consistent snapshot.
	ErrInvalidSnapshot = errors.New("invalid snapshot")
)

// CompactedError is returned by EventsSince when the watcher is too far behind.
type CompactedError struct {
	// Requested is the revision the watcher asked to resume after.
	Requested uint64
	// Oldest is the oldest revision one can still resume after; anything older must list again.
	Oldest uint64
}

func (e *CompactedError) Error() string {
	return fmt.Sprintf("revision %d compacted: history starts after revision %d, list again", e.Requested, e.Oldest)
}

// Is makes errors.Is(err, ErrCompacted) true.
func (e *CompactedError) Is(target error) bool { return target == ErrCompacted }
