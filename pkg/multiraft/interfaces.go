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
	// after Applied(group) as it was when the group was loaded; a group may appear more than
	// once in one batch. The first entry of a group bootstrapped by the host has index
	// BootstrapIndex+1.
	//
	// The batch includes raft's own entries: the empty entry every new leader appends
	// (EntryNormal with no data; proposals through the host are never empty) and conf changes.
	// They count toward Applied; the host itself applies conf changes to raft.
	//
	// Apply is called by one goroutine at a time (the apply stage). The entries MUST NOT be
	// mutated and may be retained. Writes need not be durable when Apply returns; Applied
	// must only report what is. An error stops the host: it can no longer apply in order.
	Apply(batch []Committed) error

	// Applied returns the index of the last entry of the group whose effects are durable in
	// the state machine, or 0 when there is none. The host asks when it loads the group and
	// never hands an entry at or below that index to Apply again. It is never called while
	// entries of that group are being applied.
	Applied(groupID uint64) (uint64, error)
}
