// Package verify is the checking half of the verification suite (`make verify`, run by
// tests/verify): it records what clients did against a cluster (History), builds seeded fault
// schedules (Schedule), and judges the history afterwards:
//
//   - Linearizable checks each channel's appends and reads against a model of an append-only
//     log with porcupine: an append takes the next sequence numbers, a read returns a
//     consecutive run of the log from where it asked (all of the rest when it returned fewer
//     than it may). A send whose outcome the client never learned may have happened at any
//     time after it began, or not at all.
//   - StaleReads reports reads from the start that returned fewer messages than had been
//     acknowledged before the read began (what porcupine would also reject, named plainly).
//   - ExactlyOnce compares each channel's final log with what was acknowledged: every
//     acknowledged message once, at its sequence number, and no message stored twice.
//
// It knows nothing of how the cluster is run or faulted: the runner hands it histories and
// final logs. Its checkers are tested on hand-made histories that they must reject.
package verify
