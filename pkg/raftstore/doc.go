// Package raftstore persists the raft logs of every group hosted by one node.
//
// It sits under the multi-group raft host of the replica tier (and the arbiter's single group):
// the host folds the MsgStorageAppend of all groups in a round into one Store.Save call, which is
// one write batch, on stable storage when Save returns (Store.Save states the durability
// contract raft's acknowledgements rest on), and hands each group a Log that satisfies
// raft.Storage.
// Beside each log it keeps the group's latest snapshot (installed from a leader through Save,
// or taken locally and recorded with SaveSnapshot, after which the log is compacted behind it)
// and configuration records (SaveConfState), so that a group reloads with its current voters
// rather than those of its bootstrap snapshot.
//
// Two implementations share one contract test suite: Memory (for deterministic tests of the
// host without disk) and Badger (all groups of a node in one Badger database). The Badger
// store's durability is tested by powerloss_test.go, which runs it on a filesystem that loses
// every write not yet synced (internal/lossyfs).
package raftstore
