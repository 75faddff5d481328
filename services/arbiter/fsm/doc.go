// Package fsm is the arbiter's replicated state machine: what every arbiter member applies from
// the metadata raft log, in log order. It is tier 1's memory: which nodes exist and whether they
// are alive, where every channel lives and who leads it, and which channelctl (tier 2) owns
// which slot of channels. Replicas (tier 3) never read it directly; channelctls watch it and
// change it with compare-and-set, and gateways read it to route.
//
// # Determinism
//
// Every member must reach the same state from the same entries, so applying a command depends
// only on the current state and the command: no clocks (the leader stamps times into commands),
// no randomness, and no map iteration order leaking into results (placement, slot rebalancing
// and listings work on sorted ids). A command that is refused returns an error and leaves the
// state untouched, and every member refuses it the same way; the raft integration therefore
// treats an error as an ordinary applied entry whose result is that error, never as a reason to
// stop applying.
//
// # Revisions and watch events
//
// Every change emits one event (a channel, a node or a slot after the change) and each event
// gets its own revision, one more than the previous. A command may emit several events (a
// channelctl registering moves slots to it), but a revision never covers more than one event, so
// a watcher resuming "after revision r" can never see half of something. Refused commands and
// no-ops emit nothing and do not bump the revision. Node events are emitted for registrations
// and state changes, not for load: load is derived from channels, whose events already say what
// changed.
//
// The FSM keeps a bounded history of recent events (10,000 by default) for EventsSince. Older
// revisions answer ErrCompacted and the watcher must list again. The history is not part of a
// snapshot: after Restore it starts at the snapshot's revision.
//
// # Encoding
//
// Log entries are protobuf triarch.arbiter.v1.Command messages (proto/triarch/arbiter/v1/
// log.proto), snapshots are triarch.arbiter.v1.Snapshot messages; both reuse the API's Node,
// Channel, SlotAssignment and ChannelChange. Lease expiry is deliberately absent: heartbeats are
// not raft writes; the leader keeps leases in memory (package liveness) and commits only the
// state changes it decides.
package fsm
