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
// # Whose retry
//
// Each message of an entry carries the nonce of the send it came in (LogBatch.nonces): the
// gateway draws one per client send and keeps it across its own retries of that send. The
// window keeps, with each id, the nonce of the message that took it. A later message with the
// same id and the same non-zero nonce is the gateway retrying a send whose first attempt was
// committed (its answer lost): it takes no number, as any repeat, but its result is not
// Duplicate, since the client sent the id once. A client's own resend is a new send with a new
// nonce, and is Duplicate. The nonce is in the entry, so every replica decides alike. Two
// sends draw the same 64-bit nonce with probability 2^-64 per pair; it matters only when they
// also carry the same id, and then only the flag is wrong, never the seq.
//
// # Dedup window
//
// A client_msg_id is remembered as the first 128 bits of its SHA-256 with the seq it took, the
// dedup clock when it was taken and the nonce of the message that took it: 40 bytes in a ring
// (oldest first), plus a 4-byte slot in a hash table at most four times the ring's size.
// Memory per channel is therefore bounded by 56*MaxIDs bytes whatever the ids' length (5.0 MB
// at the default 100,000, the table being 1 MiB there; the ring grows by doubling and shrinks
// when ids expire, so a channel holds about 48 bytes per live id).
//
// Two ids with the same hash would make the second a duplicate of the first: it would be
// answered with the first's seq and not stored, a silent loss. SHA-256 makes that a matter of
// chance, not of choice (no client can find an id colliding with another's: that is a second
// preimage, 2^128 work), and the chance is negligible: each new id is compared with at most
// MaxIDs others, so over m messages the probability of any collision is at most
// m*MaxIDs/2^128, about 3e-19 for 10^15 messages with a window of 100,000.
//
// Ids are forgotten by count (MaxIDs) and by age (Window), measured by the channel's dedup
// clock: the greatest propose time of the entries applied so far, so it only moves forward and
// every replica moves it at the same entry. A leader whose clock is behind does not move it; a
// leader whose clock is ahead does, and forgets the ids older than the window by its time.
// After a leader whose clock is far ahead, later ids carry its time, so they are not forgotten
// by age until the leaders' clocks pass it (the count bound still holds).
//
// Checkpoints (Checkpoint, Restore) keep the window in records keyed by a counter of
// remembered ids beside a small header, so that a checkpoint writes the ids remembered since
// the previous one (and rewrites at most 1,023 more) and deletes records whose ids all
// expired, instead of re-encoding the whole window.
//
// The payloads are stored once, in the raft log. For reads by sequence number the replica keeps a
// small SeqIndexRecord per entry (first seq -> raft index); this package produces those records
// and decodes entries back into messages.
package chanlog
