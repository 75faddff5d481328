// Package bench is the logic of `triarch bench`, kept apart from the command so it can be
// tested without a cluster: a latency histogram with bounded memory, a load runner that is
// either closed-loop (each worker sends again as soon as it is answered) or open-loop (sends
// scheduled by the clock at a fixed rate, latency measured from the intended send time, so a
// slow server cannot hide its queueing delay — no coordinated omission), a ledger of
// acknowledged messages with a read-back verifier, and the result with its JSON form, table
// and live progress line.
package bench
