// Package testcluster starts a triarch cluster for a test: the real arbiter, channelctl,
// replica and gateway services, any number of each, on loopback addresses with t.TempDir()
// data, and returns once the cluster has formed (an arbiter leader, every channelctl following
// it, every replica registered alive, every node answering /readyz). It is the one harness the
// whole-cluster tests share, in the spirit of nats-server's jetstream_helpers_test.go; the
// raft-level harnesses of pkg/multiraft stay in memory, where they can be deterministic.
//
// A cluster runs in one of two modes:
//
//   - in this process (the default), from the services' exported Start functions, as
//     `triarch dev` does: fast, lets a test read a service's state directly (Arbiter(1).FSM(),
//     Replica(2).Engine) and inject delay and loss between replicas (SetReplicaFault,
//     Partition);
//   - as real processes (Processes()) of the triarch binary, built from ./cmd/triarch, with
//     their flags: slower, but a node can really die (SIGKILL, no deferred code runs) or freeze
//     (SIGSTOP) while its peers keep running.
//
// Nodes are named by their kind and their node id in their tier: arbiters and replicas 1..n,
// channelctls ChannelctlIDBase+1..ChannelctlIDBase+n (so that a slot owner's id, as the
// arbiter records it, never reads as a replica's), the gateway 1.
// A stopped or killed node restarts on its address and data directory. With LossyDisks() the
// replicas' data directories are lossy FUSE mounts (internal/lossyfs) served by the test
// process: PowerLoss kills a replica and discards what it had not fsynced. Tests that need
// something this package lacks add it here, not a harness of their own.
package testcluster
