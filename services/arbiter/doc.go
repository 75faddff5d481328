// Package arbiter is tier 1, the upper arbitration tier: a raft-replicated metadata cluster
// holding node leases, channel placement, slot ownership and every election decision. It is the
// only component that may declare a node dead.
//
// A member that starts with an empty store asks the others whether the cluster exists
// (GetMemberState): it bootstraps the metadata group with them only when a majority answered
// and none holds anything; otherwise its disk was wiped or replaced, and it rejoins on
// probation until the leader gives its place to the new store (RejoinMember). See join.go and
// rejoin.go.
//
// This package is the service wiring (config, lifecycle, thin gRPC handlers); the replicated
// state machine lives in its own file set and is pure Go.
package arbiter
