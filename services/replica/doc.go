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
// A replica whose store was replaced refuses loads that name its old store and rejoins each
// group as a new replica: see Engine.Load and Engine.ChangeReplicas.
//
// This package is the service wiring (config, lifecycle, thin gRPC handlers); the multi-group
// raft host and its storage live in pkg/.
package replica
