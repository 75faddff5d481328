// Package multiraft hosts the raft groups of one replica: one etcd-raft RawNode per loaded
// channel, thousands per process, driven by a small fixed set of goroutines instead of a
// goroutine per group.
//
// # Role in the replica tier
//
// The replica tier keeps each channel's message log in its own raft group. It does not decide
// who leads: the control tier (channelctl, on the arbiter's decisions) picks the most
// up-to-date replica and orders it to campaign. The host therefore never lets a group elect
// itself, persists every group of the replica through one raftstore.Store, hands committed
// entries to an Applier (the channel state machines), and exposes the controls the tier
// above needs: LoadGroups and UnloadGroup (hibernation), Campaign, TransferLeader, Status,
// Propose, which answers only once the entry is committed and applied, and
// ProposeConfChange, which repairs a replica set.
//
// The arbiter runs the same host for its single metadata group, in the other election mode
// (Config.SelfElecting, below) and with snapshots (Config.SnapshotEntries).
//
// # Elections: ordered, or self-elected
//
// Raft elections are driven by ticks: a follower that hears nothing for ElectionTick ticks
// campaigns. By default (the replica tier) Tick ticks only the groups this replica leads,
// which still need ticks for heartbeats, retransmission and the leader-transfer timeout.
// Followers, candidates and pre-candidates are never ticked, so network jitter cannot start
// an election and nothing happens in a group without a leader until Campaign orders one (or
// a leader hands over with TransferLeader). CheckQuorum is off for the same reason: a leader
// does not step down on its own clock; the control tier fences old leaders with terms.
// PreVote stays on, and raft's vote rules still apply, so an ordered campaign on a stale
// replica fails without disturbing the group.
//
// With Config.SelfElecting (the arbiter, which has no tier above it) every group is ticked,
// whatever its role, and elects as plain raft does: a follower that hears from no leader for
// a randomized election timeout campaigns, and CheckQuorum is on, so a leader cut off from a
// quorum steps down after an election timeout, and followers that hear from a leader refuse
// to vote for anyone else. PreVote stays on, so a replica that was partitioned away does not
// depose the leader when it comes back.
//
// # The pipeline
//
// Raft runs with AsyncStorageWrites: a Ready carries its storage work as messages to a local
// append thread and a local apply thread, each with responses to deliver once the work is
// done. The host has three kinds of goroutines, and groups are sharded over the workers by
// id, so that a RawNode is only touched by its worker:
//
//   - Workers. A round takes what was queued for the worker (storage completions,
//     proposals, control operations, ticks, unreachable reports, peer messages; peer
//     messages and proposals capped per round), steps it into the groups, and takes the
//     Ready of every group it touched. Messages to peers go to the Transport at once,
//     before the local append is durable, as raft allows. All proposals queued for one group
//     in the round go to raft together as one MsgProp (a raft step per proposal costs
//     several times an entry in a shared MsgProp).
//   - One append stage. It takes every MsgStorageAppend queued since its last write, from
//     all workers and rounds, merges them per group and writes them with one Store.Save (one
//     batch, one fsync), then delivers the responses: acknowledgements to peers through the
//     Transport, MsgStorageAppendResp and self-acks to the workers. While it writes, the
//     workers keep stepping and queue the next batch, so the disk sees group commits whose
//     size follows the load, and rounds stay short. It also writes the records the workers
//     queue beside the log: snapshots, compactions and configurations.
//   - One apply stage. It hands the committed entries of many groups to Applier.Apply in
//     one call, then returns the responses and the applied entries to the workers, which
//     apply conf changes to raft and settle the proposals. It takes and restores snapshots.
//
// Run starts these goroutines. A host with Config.Manual runs none: the test calls
// ProcessRound, which runs one round of every worker and then drains both stages inline,
// the same code Run runs, so that a test with the memnet hub is deterministic and needs no
// sleeps.
//
// # Proposals
//
// A proposal is identified by the (term, index) raft gives its entry. The worker knows the
// index before stepping: once a group has no unhandled Ready its last index is exact, and a
// leader appends a MsgProp's entries right after it at its current term. The entry is then
// checked in the next Ready (same index, term and data). When the entry at that index is
// applied, the proposal succeeded if the term matches and failed with ErrProposalLost if
// not: by raft's log matching, (term, index) names a single entry in every log. A leader that
// steps down fails the proposals beyond its commit index at once with ErrLeadershipLost
// (they may still commit under the next leader, so callers retry with an idempotency key).
// A conf change is a proposal of its own MsgProp, checked against the configuration first,
// since raft panics on applying a change its configuration cannot take.
//
// # Groups and their configuration
//
// A new group is bootstrapped by writing, on every replica alike, a snapshot at
// BootstrapIndex holding only the voters. UnloadGroup drops a quiescent group from memory
// entirely; its data stays in the Store, and LoadGroup brings it back.
//
// Raft needs, when a group is loaded, the configuration as of the applied index it resumes
// at; conf changes after it are replayed from the log. The host keeps configuration records
// in the Store (Store.SaveConfState): after every conf change is applied, every 1024 applied
// entries, and on UnloadGroup, each saying "this is the configuration once every entry up to
// index i is applied"; a snapshot's configuration is one too. A record only ever states a
// fact about committed entries, so it needs no fsync and no atomicity with the Applier's
// state: after a crash the newest surviving record is still true. The Applier's durable
// applied index may be ahead of the newest record (the crash came between applying a conf
// change and recording it) or behind it (the Applier makes its state durable lazily). So a
// loaded group resumes raft at the lower of the two (and of the stored commit index), with
// the record's configuration; raft hands the entries above it to the apply stage again, and
// two floors keep each side from seeing what it has: the Applier gets only the entries after
// its applied index, raft only the conf changes after the record. With a record on unload
// (the common case) nothing is replayed; after a crash at most the entries since the last
// record are. The log is never compacted past the newest record, which compaction behind a
// snapshot guarantees.
//
// A replica added to a running group (ProposeConfChange on its leader) loads the group
// with GroupSpec.Join: an empty log and no configuration. The leader finds nothing in
// common with it and sends its snapshot: the bootstrap state, identical on every replica,
// if the log was never compacted, else its last snapshot. Either may predate the replica's
// addition, and raft refuses a snapshot whose configuration lacks the recipient; the
// recipient's host admits it with itself added as a learner, which the conf change that
// added it, committed after the snapshot and replayed with the rest, makes exact (see
// shard.admitSnapshot). The replica then gets every entry after the snapshot from the leader.
//
// # Snapshots
//
// With Config.SnapshotEntries, the apply stage asks the Applier (a Snapshotter) for a
// snapshot right after applying the entries that cross the threshold, so that it is exactly
// the state as of the last of them. The worker adds the configuration as of that entry
// (known once the entries' conf changes are applied to raft) and the append stage saves it
// (Store.SaveSnapshot, synced) and then compacts the log up to SnapshotKeepEntries entries
// behind it. A leader that has to send a follower compacted entries sends the snapshot
// (raft reads it from the Store); the host reports it delivered once the Transport took it
// and failed when the Transport reports it dropped (see Transport.Send).
//
// A follower that is sent a snapshot installs it in raft when it steps the MsgSnap. With
// AsyncStorageWrites the snapshot then travels in a MsgStorageAppend only, and raft
// counts it applied when it gets that append's MsgStorageAppendResp; it hands out no
// committed entry until then. The host therefore: (1) persists it in the append stage
// (Store.Save replaces the log with it); (2) passes the append's completion through the
// apply stage instead of straight to the worker, queued behind the applies of the entries
// committed before the snapshot, so that Snapshotter.Restore runs after them and before
// anything later; (3) steps the MsgStorageAppendResp only then, so that raft's applied index
// never runs ahead of the state machine; and (4) meanwhile does not take the group's Ready,
// so that no later append of the group can overtake the snapshot's. Persisting before
// restoring means a crash in between leaves a log that starts after the snapshot and an
// Applier behind it, which LoadGroups repairs by restoring the stored snapshot; the other
// order would leave an Applier ahead of its log. A host whose Applier is not a Snapshotter
// stops with an error on any snapshot but a group's bootstrap state.
package multiraft
