// Package chanlog is the state machine of one channel on a replica: it turns the committed raft
// entries of the channel's group into messages with sequence numbers.
//
// A raft entry carries one LogBatch (a client batch, or several concurrent sends coalesced by the
// leader). Sequence numbers are assigned here, at apply time, in log order: raft's own no-op and
// configuration entries never take one, so a channel's messages are numbered 1, 2, 3, ... with
// no gaps. A message whose client_msg_id was applied before (within the dedup window) takes no
// number: its result is the original number with Duplicate set. Because everything here is a
// pure function of the log, every replica computes the same numbers, and re-applying entries
// after a restart (from the last checkpoint) reproduces them exactly.
//
// The payloads are stored once, in the raft log. For reads by sequence number the replica keeps a
// small SeqIndexRecord per entry (first seq -> raft index); this package produces those records
// and decodes entries back into messages.
package chanlog
