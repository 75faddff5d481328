package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is one caller's sequence of pauses. The zero value pauses for nothing; use New.
type Backoff struct{ cur, max time.Duration }

// New returns a backoff whose first pause is about min and whose pauses grow to max.
func New(min, max time.Duration) Backoff { return Backoff{cur: min, max: max} }

// Next returns the next pause, between half the current delay and the whole of it (equal
// jitter), at least hint (a server's RetryInfo, say) and at most the maximum, and doubles the
// delay for the pause after.
func (b *Backoff) Next(hint time.Duration) time.Duration {
	d := b.cur/2 + rand.N(b.cur/2+1)
	d = min(max(d, hint), b.max)
	b.cur = min(2*b.cur, b.max)
	return d
}

// Pause waits Next(hint), but at most half of what is left before dl (no bound when dl is
// zero), and reports whether the caller may try again: false, at once, when ctx ended or less
// than minLeft is left before dl.
func (b *Backoff) Pause(ctx context.Context, dl time.Time, hint, minLeft time.Duration) bool {
	d := b.Next(hint)
	if !dl.IsZero() {
		rem := time.Until(dl)
		if rem < minLeft {
			return false
		}
		d = min(d, rem/2)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
