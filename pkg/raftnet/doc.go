// Package raftnet is the peer transport of the multi-group raft host over gRPC
// (triarch.raft.v1): one long-lived client stream per peer node, each frame carrying the raft
// messages of many groups. It is what makes replication batched across channels: a replica
// with 10,000 active groups talks to each peer over one stream, not 10,000.
//
// Sending never blocks the raft loops: each peer has a bounded queue drained by its own
// goroutine; when the queue is full or the peer is unreachable, messages are dropped and the
// host is told (ReportUnreachable), so raft probes instead of streaming into the void. A broken
// stream is re-dialled with exponential backoff.
//
// The transport also remembers when each peer was last heard from; replicas report that to the
// arbiter with their heartbeats, and leaders use it to notice that they lost their quorum.
package raftnet
