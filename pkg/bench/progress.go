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
	var last int64
	var lastAt time.Duration
	return StartLine(w, interval, func(elapsed time.Duration) string {
		n := live.Msgs.Load()
		rate := float64(n-last) / (elapsed - lastAt).Seconds()
		last, lastAt = n, elapsed
		return fmt.Sprintf("%6.1fs  %s msgs/s  %s acked  %s errors", elapsed.Seconds(), group(int64(rate)),
			group(n), group(live.Errors.Load()))
	})
}

// StartLine prints line(time since start) every interval, rewriting it with \r; scenarios
// whose phases are not a stream of sends (waiting for hibernation, say) say what they wait
// for. It returns nil (whose Stop does nothing) when w is nil. line runs on one goroutine.
func StartLine(w io.Writer, interval time.Duration, line func(elapsed time.Duration) string) *Progress {
	if w == nil {
		return nil
	}
	p := &Progress{stop: make(chan struct{}), w: w}
	start := time.Now()
	p.done.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case now := <-t.C:
				fmt.Fprintf(w, "\r%s   ", line(now.Sub(start)))
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
	fmt.Fprintf(p.w, "\r%79s\r", "")
}
