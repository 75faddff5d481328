package wait

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"sync"
	"sync/atomic"
)

// Result is what the apply stage hands a waiting request: the index of the entry that carried
// its id, and the state machine's answer to it.
type Result[T any] struct {
	Index uint64
	Value T
}

// Registry hands out proposal ids and routes results to the requests waiting for them. The
// zero value is not usable; use New.
type Registry[T any] struct {
	next    atomic.Uint64
	mu      sync.Mutex
	waiters map[uint64]chan Result[T]
}

// New returns a registry whose ids start at a random point (see the package doc).
func New[T any]() *Registry[T] {
	r := &Registry[T]{waiters: make(map[uint64]chan Result[T])}
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	r.next.Store(binary.BigEndian.Uint64(b[:]) >> 1)
	return r
}

// Waiter is one request's registration. Close it when the request ends.
type Waiter[T any] struct {
	id uint64
	r  *Registry[T]
	c  chan Result[T]
}

// Register allocates an id for a new proposal and starts listening for its results. The id
// goes into the proposed command; the apply stage passes it to Trigger.
func (r *Registry[T]) Register() *Waiter[T] {
	// Room for the real result and a few stale ones (entries of an earlier incarnation that
	// drew the same id): Trigger never blocks.
	w := &Waiter[T]{id: r.next.Add(1), r: r, c: make(chan Result[T], 4)}
	r.mu.Lock()
	r.waiters[w.id] = w.c
	r.mu.Unlock()
	return w
}

// ID is the id to put in the proposed command.
func (w *Waiter[T]) ID() uint64 { return w.id }

// Close stops listening; later results for the id are dropped.
func (w *Waiter[T]) Close() {
	w.r.mu.Lock()
	delete(w.r.waiters, w.id)
	w.r.mu.Unlock()
}

// Wait returns the value of the entry applied at index, the index raft assigned the proposal,
// ignoring results for the same id from entries at other indexes. It ends early with ctx's
// error.
func (w *Waiter[T]) Wait(ctx context.Context, index uint64) (T, error) {
	for {
		select {
		case res := <-w.c:
			if res.Index == index {
				return res.Value, nil
			}
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
	}
}

// Trigger hands the result of the entry at index, which carried id, to the request waiting
// for it, if any. It never blocks.
func (r *Registry[T]) Trigger(id, index uint64, v T) {
	r.mu.Lock()
	c := r.waiters[id]
	r.mu.Unlock()
	if c == nil {
		return
	}
	select {
	case c <- Result[T]{Index: index, Value: v}:
	default: // full of stale results; the request times out and its client retries
	}
}

// Pending is the number of registered waiters, for tests and metrics.
func (r *Registry[T]) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.waiters)
}
