package verify

import (
	"sync"
	"time"
)

// Kind is what an operation did.
type Kind uint8

const (
	// Send appended messages (one client request, retried under the same ids until answered).
	Send Kind = iota + 1
	// Read read the channel from a sequence number.
	Read
)

// Op is one client operation as the client saw it. Times are since the history began.
type Op struct {
	Client  int
	Channel string
	Kind    Kind
	Call    time.Duration
	Return  time.Duration
	// Send: the ids sent, and, when Known, the seq each was acknowledged with (a send never
	// answered has Known false: it may or may not have happened).
	IDs   []string
	Seqs  []uint64
	Known bool
	// Read: From and Limit asked, and the ids returned (from seq From on, in order).
	From  uint64
	Limit int
	Got   []string
}

// History collects operations from many clients; safe for concurrent use.
type History struct {
	start time.Time
	mu    sync.Mutex
	ops   []Op
}

// NewHistory starts a history now.
func NewHistory() *History { return &History{start: time.Now()} }

// Now is the time since the history began, by the monotonic clock.
func (h *History) Now() time.Duration { return time.Since(h.start) }

// Add records a finished operation.
func (h *History) Add(op Op) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// Ops returns a copy of the operations recorded so far.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Op(nil), h.ops...)
}
