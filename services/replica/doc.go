// Package replica is tier 3, the data synchronisation tier: one process hosts many raft groups,
// one per channel, whose elections are ordered by the channel control tier (followers are never
// ticked, so no group elects itself). It serves the data plane (append, read, subscribe) to
// gateways and a control plane batched over many channels (load, unload, campaign, status,
// transfer leader) to channelctls, and talks to peer replicas over one batched raft stream per
// node pair.
//
// # Who may serve a channel
//
// Appends are safe by raft alone: an entry is acknowledged once a majority of the group has
// synced it (raftstore.Store.Save), and only a replica holding every such entry can be
// elected. Reads need more, because a replica that believes it leads may have been replaced
// without knowing it: the channelctl orders an election, a transfer or a move on the other
// replicas while this one is cut off or paused. A read (and the start of a subscription) is
// served only when three things hold (Engine.leads, Engine.confirmRead):
//
//   - This replica has applied an entry of its current term. Until then it may not know which
//     of its entries are committed, and could answer with less than an earlier leader
//     acknowledged.
//   - A quorum of the group confirmed its leadership after the read arrived (raft's ReadIndex,
//     ReadOnlySafe), and it has applied up to the commit index as of that confirmation. A
//     replica that voted in a newer term answers with that term instead of confirming, so no
//     quorum confirms a deposed leader: any quorum shares a voter with the quorum that elected
//     its successor. This needs no clock at all, so clock drift cannot break it; it costs one
//     heartbeat round per group per batch of reads (reads arriving together share it). A
//     replica rejoining with a replaced store cannot confirm anyone before it is admitted (its
//     earlier store's votes are unknown; see multiraft.GroupSpec.AdmitToken).
//   - Its node lease with the arbiter is current, or a quorum of the group acknowledged it
//     within the lease TTL (checkLease). This is not needed for linearizability (ReadIndex
//     gives it); it makes a leader cut off from everyone stop serving before the arbiter,
//     which waits the TTL plus a margin after the last renewal, lets anyone replace it.
//
// # A stalled disk
//
// A replica whose disk stops returning its writes (a hung fsync) can commit and apply nothing,
// yet its process runs, its raft heartbeats leave from the workers without touching the disk,
// and its peers keep vouching for it. So the replica watches its own durable writes
// (diskstall.go, around Store.Save, SaveSnapshot and SaveState): once one has been in flight
// for longer than Config.DiskStallBound (2 s), it stops renewing its node lease
// (nodelease.Config.Healthy) and its transport drops everything it would send
// (raftnet.Config.Silenced), until the write returns. The arbiter then sees what it sees of
// a crashed node, declares it dead under its usual rule (TTL plus margin after the last
// renewal, confirmed by the peers that stopped hearing from it) and the channelctl moves its
// channels. CockroachDB's disk-stall detection is the model: there, a node's liveness
// heartbeat waits for a synced write.
//
// The bound changes no lease argument, because it only ever takes something away from the
// stalled node, never from the arbiter: renewals stop earlier (the node's own view of its
// lease only ends earlier, and its Valid says false at once), and dropped messages are
// losses raft tolerates, after which no peer acknowledges it any more, so the quorum half of
// checkLease lapses too. The arbiter's declaration still waits the full TTL plus margin after
// the last renewal it received, as for any node. What the bound trades is detection time
// against false alarms: a stall is declared dead about bound + TTL + margin after it began
// (the arbiter's 750 ms plus the peers' confirmation, liveness doc.go), and a write slower
// than the bound but shorter than about bound + TTL only silences the node for a moment
// (raft resends what was dropped) without any failover, though it does disturb the node's
// groups while it lasts (its reads cannot be confirmed), and silencing every node at once
// takes the cluster down. Load alone makes writes that slow on a small machine: on this
// project's 2-core machine, with every core busy, Saves took up to 0.5 s under the race
// detector (a 250 ms bound fired several times a minute) and 1.9 s at a load average of 35
// (a 1 s bound silenced all three replicas of a benchmark cluster in turn until no channel
// was writable). Hence 2 s, with which a stalled disk fails over in about 2.8 s plus the
// election: much slower than a crash, the price of not mistaking load for death. A
// deployment with a quieter machine may lower it; no lease depends on it.
//
// A replica whose store was replaced refuses loads that name its old store and rejoins each
// group as a new replica: see Engine.Load and Engine.ChangeReplicas.
//
// This package is the service wiring (config, lifecycle, thin gRPC handlers); the multi-group
// raft host and its storage live in pkg/.
package replica
