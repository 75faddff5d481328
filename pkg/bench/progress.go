package bench

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// IsTerminal reports whether f is a character device (a terminal, not a file or pipe).
func IsTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Progress prints a live line (elapsed, rate over the last interval, acked, errors) every
// interval, rewriting it with \r. Stop clears it.
type Progress struct {
	stop chan struct{}
	done sync.WaitGroup
	w    io.Writer
}

// StartProgress starts the line on w; it returns nil (whose Stop does nothing) when w is nil.
func StartProgress(w io.Writer, live *Live, interval time.Duration) *Progress {
	if w == nil {
		return nil
	}
	p := &Progress{stop: make(chan struct{}), w: w}
	start := time.Now()
	p.done.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		last, lastAt := int64(0), start
		for {
			select {
			case <-p.stop:
				return
			case now := <-t.C:
				n := live.Msgs.Load()
				rate := float64(n-last) / now.Sub(lastAt).Seconds()
				last, lastAt = n, now
				fmt.Fprintf(w, "\r%6.1fs  %s msgs/s  %s acked  %s errors   ",
					now.Sub(start).Seconds(), group(int64(rate)), group(n), group(live.Errors.Load()))
			}
		}
	})
	return p
}

// Stop ends the line and clears it.
func (p *Progress) Stop() {
	if p == nil {
		return
	}
	close(p.stop)
	p.done.Wait()
	fmt.Fprintf(p.w, "\r%60s\r", "")
}
