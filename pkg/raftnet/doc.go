// Package raftnet is the peer transport of the multi-group raft host over gRPC
// (triarch.raft.v1): one long-lived client stream per peer node, each frame carrying the raft
// messages of many groups. It is what makes replication batched across channels: a replica
// with 10,000 active groups talks to each peer over one stream, not 10,000.
//
// Sending never blocks the raft loops: each peer has a bounded queue drained by its own
// goroutine; when the queue is full or the peer is unreachable, messages are dropped and the
// host is told (ReportUnreachable), so raft probes instead of streaming into the void. A broken
// stream is re-dialled with exponential backoff. A peer that is black-holed or paused breaks
// nothing: its stream's Send just blocks once the flow-control window is full. Each peer's
// sender blocks alone (the others and the raft loops never wait for it), and a stream open
// or Send blocked for StallTimeout ends the session like a broken stream, so the link counts
// as down and its queue is reported, within seconds instead of keepalive's 15 s.
//
// A node whose disk stalled silences its transport (Config.Silenced): it sends nothing until
// its disk answers again, so its peers tell the arbiter they no longer hear from it.
//
// The transport also remembers when each peer was last heard from; replicas report that to the
// arbiter with their heartbeats, and leaders use it to notice that they lost their quorum.
package raftnet
