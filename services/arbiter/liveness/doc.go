// Package liveness is the arbiter leader's failure detector: node leases, adaptive heartbeat
// intervals and the decision that a node is suspect or dead (the article's "partition detection
// protocol"). It is pure logic: times are passed in, nothing here reads a clock, sleeps or does
// I/O, so every scenario can be replayed exactly in a test.
//
// # Where it sits
//
// Replicas and channelctls send one heartbeat per node (never per channel) to the arbiter. Only
// the arbiter leader runs a Tracker, in memory: heartbeats are not raft writes. What the Tracker
// decides (Evaluate) the leader proposes as fsm SetNodeState entries, so a decision is in the
// log and a new leader continues from exactly the same committed states; it feeds the committed
// states back with Observe. A new leader starts with no heartbeat history, so it calls
// ResetAll: every lease is extended to now+TTL, and nobody is declared dead because of the
// leader change itself. The leader renews leases only under a leader lease of its own (a
// quorum of members acknowledged it within half an election timeout, services/arbiter
// leaderlease.go), so a deposed leader stops renewing before its successor takes over, and
// every lease a node holds ends before the successor's ResetAll lease for it does. A DEAD answer
// renews nothing: the node's lease ends at once (pkg/nodelease).
//
// # The timing rule (defaults in brackets)
//
// Lease TTL [600 ms], drift margin [150 ms], heartbeat interval adaptive in [50 ms, 250 ms]
// (150 ms until measured), evaluation every [25 ms].
//
//  1. A heartbeat that reaches the arbiter at time a renews the node's lease to a+TTL. The node
//     counts its own lease from when it sent that heartbeat (s ≤ a), so its view of the lease
//     never outlasts the arbiter's.
//  2. A replica leader stops serving (no writes, no leader reads) once, for TTL, it has neither
//     renewed its lease nor heard from a quorum of its group. So a node cut off from the
//     arbiter alone keeps serving: its peers still reach it.
//  3. The arbiter declares a node dead only when now > a + TTL + margin, and only when a strict
//     majority of its live peers (the nodes it shares channels with whose own leases are
//     current) report, in reports at most ReportMaxAge [600 ms] old, that they cannot reach it
//     either: reachable=false, or no contact for PeerSilence [400 ms] or more. Between a+TTL and
//     then it is at most suspect; suspicion moves nothing. A node with no peers (a channelctl, a
//     replica without channels) is declared dead on the lease alone. A node whose peers are all
//     expired too stays suspect: with no live witness a crash looks like the arbiter being cut
//     off, and there is nobody to fail over to anyway.
//  4. Only after the dead state is committed does a channelctl elect a new leader. A node cut
//     off from everyone stopped serving at s+TTL ≤ a+TTL by rule 2, at least the margin before
//     anyone replaced it. The margin absorbs the difference between the node's and the
//     arbiter's clocks over one TTL and the node's delay in noticing its own expiry (its
//     timer tick, a GC pause): 150 ms is 25% of the TTL, far above any real clock-rate drift.
//     What remains — a node cut off from the arbiter and from most peers but still in touch
//     with a quorum of one group — cannot be replaced in that group anyway: a new leader needs
//     a quorum of the group's votes, and raft terms depose the old one.
//
// # Meeting the targets with the defaults
//
// A crashed node whose last heartbeat arrived at a is declared dead at the first evaluation
// after a + TTL + margin (750 ms) at which a majority of its live peers confirm. Its peers last
// heard from it around a too; they count it unreachable from a + PeerSilence (400 ms) and say
// so in their next heartbeat, at most 250 ms + 50% jitter later, so confirmation is in by
// a + 775 ms at worst. The declaration therefore comes by a + 800 ms (one 25 ms evaluation
// period after both), plus the raft commit of the decision (milliseconds): under the 1 s p99
// target. Simulated over 400 crashes with ±50% jitter: p50 763 ms, p99 775 ms
// (TestCrashDetectionLatency).
//
// A node whose heartbeats jitter by ±50% never gets near its TTL: its gaps are at most
// 1.5 × 250 = 375 ms. The adaptive interval also shrinks under that jitter (to ≈ 210 ms), so
// that even one lost heartbeat plus the worst jitter (2.5 × 210 ≈ 530 ms) stays inside the
// 600 ms TTL, which a fixed 250 ms (625 ms) would not. Simulated for 10 minutes × 3 seeds, 5
// nodes, network delay up to 20 ms: no suspicion at all (TestJitterNeverDeclares).
//
// # Adaptive interval
//
// Per node the Tracker keeps the last Window [64] inter-arrival gaps, their deviation from the
// interval the node was told, and the reported round trips (phi-accrual style statistics, σ
// floored at MinStdDev [5 ms]). The next interval is the one that still leaves room for one
// lost heartbeat with JitterSigmas [3] standard deviations of noise inside the TTL:
//
//	interval = clamp((TTL − mean RTT − 3σ) / 2 − mean lateness, Min, Max)
//
// Calm links heartbeat every 250 ms (fewer bytes, less work); noisy or lossy links heartbeat
// more often, which is how they get more slack before suspicion while the TTL — and so the
// safety rule above — stays fixed. Phi is exported for metrics, but decisions are made on the
// lease: the node can compute its own lease, not the arbiter's phi.
package liveness
