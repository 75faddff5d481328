package raftstore

import (
	"errors"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// ErrClosed is returned by a Store after Close.
var ErrClosed = errors.New("raftstore: closed")

// Store holds the raft logs, hard states and snapshots of all the groups of one node.
//
// A Store is safe for concurrent use. Save is called by one append stage at a time; Log reads
// may run concurrently with it and see either the state before or after a Save, never a mix
// within one group.
type Store interface {
	// Open returns the log of a group, loading its positions from disk. A group that was never
	// saved opens empty. Opening a group that is open returns the same Log.
	Open(groupID uint64) (Log, error)
	// Save writes the updates of many groups as one batch. It MUST NOT return before the whole
	// batch is on stable storage (one fsync for the batch), and it MUST apply each update
	// entirely or not at all. Entries of an update replace any stored entries of that group from
	// the first new index on (raft's log truncation); a snapshot replaces the whole log, entries
	// after its index included (raft installs one only when its log does not hold the
	// snapshot's index and term), as raft.MemoryStorage.ApplySnapshot does.
	Save(updates []Update) error
	// Release drops a group's in-memory state (hibernation); its data stays on disk and a later
	// Open reloads it. Logs handed out before Release must no longer be used.
	Release(groupID uint64)
	// Compact discards a group's entries before index (which must be applied), keeping the
	// term of index-1 for raft's log matching.
	Compact(groupID, index uint64) error
	// Groups lists every group with data in the store, open or not, in increasing order.
	Groups() ([]uint64, error)
	// Delete removes a group and all its data.
	Delete(groupID uint64) error
	// Close releases all resources. Pending Saves have returned before Close is called.
	Close() error
}

// Log is one group's view of a Store. It implements raft.Storage and reflects every Save that
// has returned. Entries it returns are never mutated, by it or by callers.
type Log interface {
	raft.Storage
}

// Update is what one group's MsgStorageAppend asks to persist.
type Update struct {
	GroupID uint64
	// HardState is nil when unchanged.
	HardState *raftpb.HardState
	// Entries are consecutive, in increasing index order.
	Entries []*raftpb.Entry
	// Snapshot is nil when there is none to install.
	Snapshot *raftpb.Snapshot
}

// UpdateFromMessage converts a MsgStorageAppend of group groupID into an Update.
func UpdateFromMessage(groupID uint64, m *raftpb.Message) Update {
	u := Update{GroupID: groupID, Entries: m.GetEntries()}
	// Term, vote and commit are all set when any of them changed (see raftpb.Message).
	if m.Term != nil || m.Vote != nil || m.Commit != nil {
		u.HardState = &raftpb.HardState{Term: m.Term, Vote: m.Vote, Commit: m.Commit}
	}
	if s := m.GetSnapshot(); s != nil && !raft.IsEmptySnap(s) {
		u.Snapshot = s
	}
	return u
}
