// Package wait connects a request that proposed an entry to a raft log with the result the
// state machine computes when that entry is applied, in the manner of etcd's pkg/wait and
// pkg/idutil. The arbiter (one metadata group) and the replica (a group per channel) both
// propose commands and wait for their results through it.
//
// Two rules make the connection exact:
//
//   - Ids never repeat across restarts of a process. A log replays entries of a previous
//     incarnation after a restart (everything after the last checkpoint or snapshot); their
//     ids must not name a request of the new incarnation. Ids start at a random point of a
//     63-bit space in every process (crypto randomness), so a repeat needs two incarnations
//     to draw starting points within a few billion of each other.
//   - A result counts only when it comes from the entry at the index raft gave the proposal.
//     Even a repeated id then cannot answer the wrong request: the replayed entry sits at
//     another index.
//
// Delivery never blocks the apply stage: each waiter buffers a few results, and a waiter
// that is full or gone drops them (its request times out and the client retries with its
// idempotency key).
package wait
