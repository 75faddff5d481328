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
// and Propose, which answers only once the entry is committed and applied.
//
// # Never tick followers
//
// Raft elections are driven by ticks: a follower that hears nothing for ElectionTick ticks
// campaigns. Tick ticks only the groups this replica leads, which still need ticks for
// heartbeats, retransmission and the leader-transfer timeout. Followers, candidates and
// pre-candidates are never ticked, so network jitter cannot start an election and nothing
// happens in a group without a leader until Campaign orders one (or a leader hands over with
// TransferLeader). CheckQuorum is off for the same reason: a leader does not step down on its
// own clock; the control tier fences old leaders with terms. PreVote stays on, and raft's
// vote rules still apply, so an ordered campaign on a stale replica fails without disturbing
// the group.
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
//     size follows the load, and rounds stay short.
//   - One apply stage. It hands the committed entries of many groups to Applier.Apply in
//     one call, then returns the responses and the applied entries to the workers, which
//     apply conf changes to raft and settle the proposals.
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
//
// # Groups
//
// A new group is bootstrapped by writing, on every replica alike, a snapshot at
// BootstrapIndex holding only the voters; raft restores the configuration from it on every
// load, so a reload can resume right after what the Applier reports applied without
// replaying the log. UnloadGroup drops a quiescent group from memory entirely; its data
// stays in the Store.
package multiraft
