package replica

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/chanlog"
)

// Coalescing concurrent sends at the leader.
//
// Every raft entry costs a proposal, a log write and a seq index record on each replica, and
// its apply, whatever it carries; many single-message sends to one channel would pay all of it
// per message. So a channel's Appends go through its coalescer: while one round of the
// channel's entries is in flight, further Appends queue, and the next round proposes all of
// them together, in as few entries as the limits allow (one LogBatch each, under one proposal
// id). An idle channel proposes at once, so coalescing adds no latency at low load; under
// load the entries grow with the commit latency.
//
// Nothing of the acknowledgement rules changes: an entry's requests are answered only from the
// result the apply stage delivers for that entry's committed index (see Engine.propose), each
// with its own messages' results, which are contiguous in the entry. Dedup is the state
// machine's, which sees one entry's messages in order, so a retry coalesced with its original
// is answered with the original's seq. Each request's nonce goes with each of its messages
// (LogBatch.nonces), so the state machine tells a gateway's retry of a send from another
// send wherever the two land.

// appendReq is one Append waiting in its channel's coalescer.
type appendReq struct {
	msgs  []*triarchv1.MessageInput
	bytes int    // sum of the messages' encoded sizes, as validateBatch counts them
	nonce uint64 // the send's nonce (AppendRequest.nonce), 0 for none
	// done receives the outcome once; buffered, so a request that left is never waited for.
	done chan appendOutcome
	// entry is the entry that carries the request, nil while it is queued (under coalescer.mu).
	entry *coalescedEntry
}

type appendOutcome struct {
	results []chanlog.Result
	err     error
}

// coalescedEntry is one raft entry carrying several requests' messages.
type coalescedEntry struct {
	reqs []*appendReq
	msgs int
	// ctx bounds the proposal: it is cancelled once every request it carries has left (their
	// contexts ended), so a proposal that can neither commit nor fail (a leader cut off from
	// its group) does not hold up the channel's later sends for longer than its callers wait.
	ctx    context.Context
	cancel context.CancelFunc
	live   atomic.Int32
}

// leave is called by a request that stops waiting for the entry.
func (c *coalescedEntry) leave() {
	if c.live.Add(-1) == 0 {
		c.cancel()
	}
}

// coalescer queues a channel's Appends and proposes them in rounds. The zero value is ready.
//
// One round at a time, rather than a fixed number of entries in flight: with one channel and
// 256 single-message senders (BenchmarkCommitted), one in flight made entries of ~110
// messages and 12.4k msgs per CPU second, two or four in flight ~65 or ~37 messages and
// about 11.4k. A round still proposes the whole queue, in several entries when the limits
// ask for it, so a hot channel is not held to one entry per commit latency.
type coalescer struct {
	mu     sync.Mutex
	queue  []*appendReq
	active bool // a round is in flight

	// entries and requests count what was proposed, for tests and benchmarks.
	entries, requests atomic.Int64
}

// append proposes msgs (already validated; bytes is their size) of the send with nonce and
// waits for their results.
func (p *coalescer) append(ctx context.Context, e *Engine, ch *channel, msgs []*triarchv1.MessageInput, bytes int, nonce uint64) ([]chanlog.Result, error) {
	p.mu.Lock()
	if !p.active {
		// An idle channel: the request is a round of its own, proposed on its own goroutine
		// and under its own context, exactly as if nothing were coalesced (which is what
		// most sends to most channels see, so they pay nothing for it).
		p.active = true
		p.mu.Unlock()
		p.entries.Add(1)
		p.requests.Add(1)
		res, err := e.propose(ctx, ch, msgs, repeatNonce(nil, nonce, len(msgs)))
		p.handOff(e, ch)
		return res, err
	}
	r := &appendReq{msgs: msgs, bytes: bytes, nonce: nonce, done: make(chan appendOutcome, 1)}
	p.queue = append(p.queue, r)
	p.mu.Unlock()
	select {
	case out := <-r.done:
		return out.results, out.err
	case <-ctx.Done():
		p.mu.Lock()
		entry := r.entry
		if entry == nil {
			// Not proposed yet: it never will be.
			p.queue = slices.DeleteFunc(p.queue, func(q *appendReq) bool { return q == r })
		}
		p.mu.Unlock()
		if entry != nil {
			entry.leave()
		}
		return nil, ctx.Err()
	}
}

// handOff ends a round proposed by its own request: what queued meanwhile is the next round.
func (p *coalescer) handOff(e *Engine, ch *channel) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) == 0 {
		p.active = false
		return
	}
	go p.flush(e, ch)
}

// flush runs rounds until the queue is empty: each round proposes everything queued, cut into
// entries by the limits and proposed together, and waits until they are all applied (or
// failed) before the next.
func (p *coalescer) flush(e *Engine, ch *channel) {
	for {
		p.mu.Lock()
		entries := p.cut()
		if len(entries) == 0 {
			p.active = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		var wg sync.WaitGroup
		for _, c := range entries[1:] {
			wg.Go(func() { p.propose(e, ch, c) })
		}
		p.propose(e, ch, entries[0])
		wg.Wait()
	}
}

// cut takes the queue and splits it, in order, into entries within MaxBatchLen messages and
// MaxBatchBytes (every request alone is within them). p.mu is held.
func (p *coalescer) cut() []*coalescedEntry {
	var (
		out   []*coalescedEntry
		cur   *coalescedEntry
		bytes int
	)
	for _, r := range p.queue {
		if cur == nil || cur.msgs+len(r.msgs) > MaxBatchLen || bytes+r.bytes > MaxBatchBytes {
			cur = &coalescedEntry{}
			cur.ctx, cur.cancel = context.WithCancel(context.Background())
			out = append(out, cur)
			bytes = 0
		}
		cur.reqs = append(cur.reqs, r)
		cur.msgs += len(r.msgs)
		bytes += r.bytes
		r.entry = cur
	}
	for _, c := range out {
		c.live.Store(int32(len(c.reqs)))
	}
	clear(p.queue)
	p.queue = p.queue[:0]
	return out
}

// propose proposes one entry and hands each of its requests its own results.
func (p *coalescer) propose(e *Engine, ch *channel, c *coalescedEntry) {
	defer c.cancel()
	if c.ctx.Err() != nil {
		return // every request left before its turn: nobody wants these messages any more
	}
	p.entries.Add(1)
	p.requests.Add(int64(len(c.reqs)))
	msgs := c.reqs[0].msgs
	if len(c.reqs) > 1 {
		msgs = make([]*triarchv1.MessageInput, 0, c.msgs)
		for _, r := range c.reqs {
			msgs = append(msgs, r.msgs...)
		}
	}
	var ns []uint64
	if slices.ContainsFunc(c.reqs, func(r *appendReq) bool { return r.nonce != 0 }) {
		ns = make([]uint64, 0, c.msgs)
		for _, r := range c.reqs {
			ns = repeatNonce(ns, r.nonce, len(r.msgs))
		}
	}
	results, err := e.propose(c.ctx, ch, msgs, ns)
	if err == nil && len(results) != len(msgs) {
		err = fmt.Errorf("replica: entry of %s applied with %d results for %d messages", ch.id, len(results), len(msgs))
	}
	off := 0
	for _, r := range c.reqs {
		if err != nil {
			r.done <- appendOutcome{err: err}
			continue
		}
		n := len(r.msgs)
		r.done <- appendOutcome{results: results[off : off+n : off+n]}
		off += n
	}
}

// repeatNonce appends nonce n times to ns, for a request of n messages; a request without a
// nonce leaves a nil ns nil, so that entries of such requests alone carry no nonces at all.
func repeatNonce(ns []uint64, nonce uint64, n int) []uint64 {
	if nonce == 0 && ns == nil {
		return nil
	}
	for range n {
		ns = append(ns, nonce)
	}
	return ns
}
