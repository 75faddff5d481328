package multiraft

import (
	"go.etcd.io/raft/v3/raftpb"
)

// Envelope is one raft message of one group, as it travels between hosts.
type Envelope struct {
	GroupID uint64
	Msg     *raftpb.Message
}

// Transport carries raft messages to peer hosts. Many groups share it: it is expected to batch
// the messages of all groups bound for one peer into frames of one stream.
//
// The receiving side hands what arrives to the peer's Host.Step.
type Transport interface {
	// Send queues msgs for delivery to the nodes named by their Msg.To and returns at once.
	//
	// Send MUST NOT block: raft workers and the append stage call it, and every group of the
	// host waits while they do. When a peer's queue is full or the peer is disconnected, Send
	// drops the message. For every message it drops, at once or later while the message sits
	// in a queue, it MUST call ReportUnreachable(groupID, to) on the sending Host, so that the
	// group's leader stops optimistic replication to that follower and probes instead.
	// Silent loss is tolerated by raft, but then the follower only recovers at the next
	// heartbeat.
	//
	// Snapshots (MsgSnap) need no special handling: the host reports a MsgSnap as delivered
	// to raft (ReportSnapshot) once Send has returned without reporting it dropped, and as
	// failed when a ReportUnreachable for that follower arrives before that. Raft holds a
	// follower that is sent a snapshot back until one of the two is reported, so an
	// optimistic success is what keeps a follower from waiting forever on a snapshot that a
	// transport lost silently or a follower crashed on: after it the leader resumes probing
	// at the next heartbeat response, and a follower that did not get the snapshot is just
	// sent it again. A transport MAY therefore send a large MsgSnap on a side channel,
	// provided it still calls ReportUnreachable if that fails.
	//
	// Send is called concurrently from several goroutines. It MUST NOT keep msgs after it
	// returns (the host reuses the slice); it may keep the messages, which nobody mutates
	// after Send.
	Send(msgs []Envelope)
}

// Committed is a run of committed entries of one group, in index order.
type Committed struct {
	GroupID uint64
	Entries []*raftpb.Entry
}

// Applier is the state machine the committed entries of every group are applied to.
//
// It must be safe for concurrent use by the apply stage and by LoadGroup of other groups.
type Applier interface {
	// Apply applies a batch of committed entries of many groups. Per group, entries arrive
	// exactly once, contiguous and in increasing index order across calls, starting right
	// after Applied(group) as it was when the group was loaded, or right after the index of
	// a snapshot handed to Snapshotter.Restore since; a group may appear more than once in
	// one batch. The first entry of a group bootstrapped by the host, or joined with
	// GroupSpec.Join, has index BootstrapIndex+1.
	//
	// The batch includes raft's own entries: the empty entry every new leader appends
	// (EntryNormal with no data; proposals through the host are never empty) and conf changes.
	// They count toward Applied; the host itself applies conf changes to raft.
	//
	// Apply is called by one goroutine at a time (the apply stage). The entries MUST NOT be
	// mutated and may be retained. Writes need not be durable when Apply returns; Applied
	// must only report what is.
	//
	// An entry the Applier cannot apply (it does not decode, or fails its checksum: this
	// replica's copy of the log is corrupt) must neither be skipped, since this replica would
	// then diverge from its peers on everything after it, nor stop the host, since every
	// other group of the replica would stop with it. Apply fails that group alone by
	// returning a *FailedGroupsError, as is, not wrapped, naming each failed group with the
	// index of the entry that failed. It must then have applied every entry of every other
	// group of the batch; of a failed group it may have applied the entries before the
	// failing one, and it must never apply anything of that group again (nor make durable
	// an applied index at or past the failing entry). The host then:
	//
	//   - hands nothing more of the group to Apply, Snapshot or Restore;
	//   - sends no acknowledgement of the group any more: MsgAppResp, MsgVoteResp and
	//     MsgPreVoteResp leave only from the append stage, once what they acknowledge is
	//     durable, and it drops those of a failed group (and no longer saves its appends),
	//     so the replica counts towards no quorum of the group, neither for commits nor for
	//     elections;
	//   - drops the group from its worker: it is no longer ticked, stepped, led or campaigned,
	//     and its pending proposals fail with the *GroupFailedError (an entry of theirs may
	//     still commit on the other replicas: callers retry with their idempotency keys);
	//   - remembers the failure until the process exits or ResetGroup discards the group's
	//     copy (Failure): Status, Campaign,
	//     Propose, UnloadGroup and the others return the *GroupFailedError (errors.Is
	//     ErrGroupFailed), and LoadGroups refuses to load the group again, so that a corrupt
	//     group never comes back silently.
	//
	// Other groups go on as if nothing happened. The failed group's data stays in the Store
	// as it is; repairing it from its peers is up to the caller (ResetGroup, then a load with
	// Join).
	//
	// Any other error stops the host: it can no longer apply in order.
	Apply(batch []Committed) error

	// Applied returns the index of the last entry of the group whose effects are durable in
	// the state machine, or 0 when there is none. The host asks when it loads the group and
	// never hands an entry at or below that index to Apply again. It is never called while
	// entries of that group are being applied.
	Applied(groupID uint64) (uint64, error)
}

// Snapshotter is implemented by Appliers whose groups take snapshots.
//
// A host whose Applier implements it can take part in groups whose logs are compacted: it
// takes snapshots itself (Config.SnapshotEntries), restores a follower that fell behind a
// leader's compacted log from the leader's snapshot, and restores a group whose Applier is
// behind the compacted log when it loads it. Without it, a snapshot from a leader (other than
// a group's bootstrap state) stops the host: its state machine could not follow.
//
// Both methods are called by the apply stage, between Apply calls (so a snapshot is exactly
// the state after the entries applied so far), or by LoadGroups for a group not loaded yet.
type Snapshotter interface {
	// Snapshot returns the group's state machine state as of everything applied so far, and that index.
	//
	// It is called only with Config.SnapshotEntries, right after an Apply, and the index
	// must be that of the group's last entry applied. The host records the data in the Store
	// (with the configuration as of that index) and compacts the log behind it; the data is
	// sent as is to followers that need compacted entries and handed to their Restore, so it
	// must not be modified once returned. An error skips this snapshot; the host goes on.
	Snapshot(groupID uint64) (data []byte, appliedIndex uint64, err error)
	// Restore replaces the group's state with the snapshot (a follower that fell behind the leader's compacted log).
	//
	// The snapshot's data is what some replica's Snapshot returned; its metadata holds its
	// index, term and configuration. Once Restore returns, Applied must report the
	// snapshot's index as soon as the restored state is durable, and Apply continues with
	// the entry after it. Restore is not called for a group's bootstrap state at
	// BootstrapIndex, which holds nothing, nor when the Applier reported an applied index
	// past the snapshot's when the group was loaded. snap must not be modified. A
	// *GroupFailedError for the group (a corrupt snapshot) fails that group alone, as a
	// *FailedGroupsError from Apply does; any other error stops the host.
	Restore(groupID uint64, snap *raftpb.Snapshot) error
}
