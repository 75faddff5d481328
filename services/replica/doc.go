// Package replica is tier 3, the data synchronisation tier: one process hosts many raft groups,
// one per channel, whose elections are ordered by the channel control tier (followers are never
// ticked, so no group elects itself). It serves the data plane (append, read, subscribe) to
// gateways and a control plane batched over many channels (load, unload, campaign, status,
// transfer leader) to channelctls, and talks to peer replicas over one batched raft stream per
// node pair.
//
// This package is the service wiring (config, lifecycle, thin gRPC handlers); the multi-group
// raft host and its storage live in pkg/.
package replica
