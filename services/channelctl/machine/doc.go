// Package machine is the pure core of tier 2, the channel control tier: the state machine of
// one channel, the choice of its leader, and the planning that turns the work of many channels
// into a few batched RPCs. It does no I/O, starts no goroutines, reads no clock and draws no
// random numbers, so that every decision channelctl makes about leadership can be replayed in a
// table test.
//
// # Driving it
//
// The channelctl service owns one Machine per channel of its slots and drives it the way a raft
// host drives raft.RawNode:
//
//	acts, err := m.Step(event)   // a request, an arbiter decision, or a result
//	// carry out acts (even when err != nil), usually batched over many channels with Batch,
//	// then Step each result back in as an event
//
// Events in: Resolve (a client needs the leader), CancelWaiter, Activate and Hibernate (operator
// orders), IdleTimeout (time is passed in, never read), MoveLeader, Repair (a Repair naming
// one node twice is a rejoin), CheckLeader, NodeDead and NodeAlive (arbiter decisions), Retry, and the
// results CASResult, GroupsLoaded, PositionsReported, CampaignResult, TransferResult,
// ConfirmResult, UnloadResult and ReplicasChanged. Actions out: CommitCAS to the arbiter; LoadGroups, QueryPositions, Campaign,
// TransferLeader, ConfirmLeader, Unload and ChangeReplicas to replicas; AnswerWaiters and
// FailWaiters to the clients waiting in Resolve.
//
// Each state has its own step function (stepHibernated, stepActivating, stepActive,
// stepElecting, stepHibernating), as raft.go has stepLeader and friends. The states are the
// arbiter's ChannelState values:
//
//	hibernated -> activating -> active -> electing -> active
//	active -> hibernating -> hibernated
//
// # The rule: commit in the arbiter first, then act
//
// Every step that changes leadership (who leads, or whether anyone leads) is first written to
// the arbiter as a compare-and-set on the channel's epoch, and only acted on once accepted. Each
// accepted CAS bumps the epoch; the orders that follow carry the new epoch, so replicas can
// refuse older ones. The arbiter accepts a CAS only from the channelctl that owns the channel's
// slot, so a channelctl that lost its slot (or whose view is stale) learns it from the first
// refused CAS, before it has ordered anything: on a refusal the machine adopts the arbiter's
// record, drops what it was doing and fails (or, if the record shows an active leader,
// answers) its waiters. Refused for ownership, the machine is fenced and refuses every later
// event; refused for a stale epoch, it stays usable and resumes on Retry. Loads, position
// queries and confirmations move no leadership and need no CAS of their own; activation still
// claims first so that its loads carry a fresh epoch.
//
// Activation (hibernated, a client resolves; epoch e):
//
//	CAS e:   state=ACTIVATING leader=0          claim; loads go out under e+1
//	LoadGroups on live replicas @e+1            the load answers with each replica's position
//	ChooseLeader over a reachable majority      (else: stall, waiters fail, no majority reachable)
//	CAS e+1: leader=c                           the decision, recorded before it is carried out
//	Campaign c @e+2                             the answer carries c's status; when it shows c
//	ConfirmLeader c (leader, term >= won term)  leading, it stands for this confirmation
//	                                            (lost or unconfirmed: choose again, bounded)
//	CAS e+2: state=ACTIVE leader=c term=t seq   only now do gateways route to c
//	AnswerWaiters(c, t, e+3)
//
// Failover (active, the arbiter declares leader d dead; epoch e):
//
//	CAS e:   state=ELECTING leader=0            gateways stop routing to d and resolve instead
//	LoadGroups on live replicas @e+1 (a no-op where loaded; answers with positions)
//	ChooseLeader, then CAS e+1: leader=c, Campaign c @e+2, ConfirmLeader c,
//	CAS e+2: state=ACTIVE leader=c term=t, AnswerWaiters      (as in activation)
//
// Ordered move (active, MoveLeader to m; epoch e):
//
//	QueryPositions on leader and m @e           refused unless m holds the leader's whole log
//	CAS e:   state=ELECTING leader=m            the candidate is known, so one CAS claims and decides
//	TransferLeader leader->m @e+1               (failed: ordinary election, old leader preferred)
//	ConfirmLeader m (term > old term), CAS e+1: state=ACTIVE leader=m term=t
//
// Hibernation (active, IdleTimeout after HibernateAfter without activity; epoch e):
//
//	QueryPositions on all replicas @e           refused unless CanHibernate: every replica holds,
//	                                            commits and applies the whole log; activity seen
//	                                            meanwhile refuses too
//	CAS e:   state=HIBERNATING                  leader kept: it serves until unloaded
//	Unload on all replicas @e+1                 (any refusal: CAS state=ACTIVATING and reactivate,
//	                                            since nobody knows which replicas still hold it)
//	CAS e+1: state=HIBERNATED seq               leader kept as the hint for the next activation
//
// Replica-set repair (active, Repair{dead d, with w} once d has been dead long enough; epoch e):
//
//	CAS e:   next=set with d replaced by w      claim: fences a channelctl that lost the slot,
//	                                            and names the set raft moves to (see below)
//	LoadGroups join on the live new set @e+1    w starts empty; the others learn w's address;
//	                                            w's answer names its store s (none: abandon)
//	ChangeReplicas +w -d store=s, leader @e+1   w learner (s admits it), caught up, voter; d removed
//	CAS e+1: replicas=set with d replaced by w  raft first, then the record (next cleared); d is
//	         stores={w: s}                      forgotten, and w's loads name s from now on
//
// Rejoin (active, Repair{dead x, with x}: x is a live member that is not the leader, whose node
// registered a store other than the one the record names for it, or whose copy of the group
// failed there; epoch e):
//
//	CAS e:   (no field)                         claim
//	LoadGroups join on the live set @e+1        x starts empty and answers with its store s: a
//	                                            new one, or the recorded one with reset (its
//	                                            failed copy discarded); none, or the recorded
//	                                            one without reset: abandon
//	ChangeReplicas rejoin x store=s @e+1        the leader removes x, adds it back as a learner,
//	                                            promotes it once caught up
//	CAS e+1: stores={x: s}                      the replica set is unchanged
//
// Every load that is not a join names, for the replica it goes to, the store the record holds
// for it; a replica whose store was replaced refuses it (its empty log must not count as a
// voter's, nor be elected) until a rejoin records its new store, and one whose copy failed or
// was reset refuses it too until the rejoin admits it back.
//
// The order names the whole voter set wanted, so a voter or learner that an earlier,
// unfinished repair left in raft leaves too. A failed step leaves the channel active and the
// repair to be ordered again (the driver orders it with the same w while w can take channels,
// so each step already done is a no-op).
//
// A Resolve that arrives mid-transition waits and is answered when the channel is active; one
// that arrives while hibernating triggers activation right after, as an operator's Activate
// does.
//
// Leader check (active, a Resolve naming the recorded leader as stale, or CheckLeader from the
// driver, which found the leader's copy failed): ConfirmLeader on it. Leading in the recorded
// term: the waiters get it again. Answered without leading (a failed copy answers with an
// error for the group, which counts so): an election. No answer (the call failed): unknown,
// not deposed; the waiters fail and retry, and only three unknown checks in a row, with no
// answer between them, start an election. A check asked for while another check or a repair
// is in flight runs once that ends with the channel still active.
//
// # Joint replica sets: a repair cut short
//
// Raft's configuration changes before the record (a replica the record lists must hold the
// group's data), so a repair cut short after ChangeReplicas (the channelctl died, the leader
// died, the call timed out while the leader went on) leaves raft's voters ahead of the record.
// That is why the claim names the next set (Channel.next_replica_node_ids) before raft is
// touched: from then until the record, raft's voters are the record's set R, the next set N, or,
// mid-change, the two merged (w promoted, d not yet removed), and the record says so. While next
// is set:
//
//   - loads (activation, election gathers, a restarted node's reload in the driver) go to R ∪ N,
//     as joins to the replicas only N lists (they may hold nothing yet, and a load that is not
//     a join would bootstrap them with a history of their own), naming no store for them;
//   - the hibernation check queries and the unload covers R ∪ N, and every replica of both must
//     hold the whole log: any of them may be one raft counts on, or hold the group in memory;
//   - ChooseJointLeader needs a reachable majority of R and a reachable majority of N. Committed
//     entries sit on a majority of whichever configuration is in force; a majority of R meets
//     every majority of R (and of R ∪ {w}, since three of four always include two of R), a
//     majority of N every majority of N, so with both the most up-to-date reachable voter holds
//     every committed entry whichever it is. One majority alone is not enough: with R = {a, b, d}
//     in force, {b, w} is a majority of N = {a, b, w} that misses an entry committed on {a, d};
//     with N in force, {b, d} is a majority of R that misses one committed on {a, w}.
//     The exception is a replica that applies N (GroupStatus.voters): raft applies only
//     committed entries, and N is the change's last step (moving on needs another repair, whose
//     claim names its own next set), so N is in force and decides alone. A replica applying R
//     proves nothing: it may just lag behind a change committed without it. A replica that
//     reports itself outside the voters it applies (a learner) counts for the majorities but
//     cannot campaign, so it is no candidate.
//
// A leader found applying N rolls the record forward (replicas=N, next cleared, with the store
// of each newcomer that reports itself a voter): in the decide CAS when the gathered statuses
// show N applied (the candidate is then one of N), in the settle CAS when the new leader's
// status shows it, and while active in a CAS of its own when a leader check or the idle check
// finds the leader applying N. Work that would act on one of the sets while the record is
// joint (another repair, a rejoin, a move, or a hibernation that a joiner holds up) first
// reconciles the record with raft under a fresh epoch (reconcile.go): N applied rolls it
// forward, R applied with nothing pending clears N, anything else waits. A repair's claim
// therefore never overwrites a next set raft may hold; the same repair ordered again resumes.
// A rejoin (d == w) changes no set and names none.
//
// # Choosing and batching
//
// ChooseLeader never picks a replica behind a reachable one and refuses without a reachable
// majority; ChooseJointLeader does the same while the replica set changes, over both sets. CanHibernate decides whether the statuses allow unloading. PlanFailover orders and
// slices the failover of every channel a dead node led (waiting clients first, at most a budget
// per step, one load and one campaign call per node per step); Batch groups any round of
// actions from many machines into one arbiter call and one call per node and kind. PlanBalance
// spreads leaders with rate-limited transfers to caught-up replicas only.
//
// # Left to the driver
//
// Timers (idle, retry backoff, client deadlines), addresses, the arbiter watch, and rebuilding
// machines after a takeover (New on the arbiter's record; intermediate states start stalled and
// resume on Retry) are the service's, as is choosing when to repair or balance and with which
// nodes.
package machine
