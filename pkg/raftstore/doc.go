// Package raftstore persists the raft logs of every group hosted by one node.
//
// It sits under the multi-group raft host of the replica tier (and the arbiter's single group):
// the host folds the MsgStorageAppend of all groups in a round into one Store.Save call, which is
// one write batch and one fsync, and hands each group a Log that satisfies raft.Storage.
//
// Two implementations share one contract test suite: Memory (for deterministic tests of the
// host without disk) and Badger (all groups of a node in one Badger database).
package raftstore
