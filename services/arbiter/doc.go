// Package arbiter is tier 1, the upper arbitration tier: a raft-replicated metadata cluster
// holding node leases, channel placement, slot ownership and every election decision. It is the
// only component that may declare a node dead.
//
// This package is the service wiring (config, lifecycle, thin gRPC handlers); the replicated
// state machine lives in its own file set and is pure Go.
package arbiter
