package fsm

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
)

// Reads run on RPC goroutines while the raft loop applies; under -race this checks the
// locking, and every read must see a consistent state (no channel in a page newer than the
// page's revision). The readers use assert: they are not the test goroutine.
func TestConcurrentReadsDuringApply(t *testing.T) {
	f := New(WithHistory(100_000))
	w := newWorkload(11)
	for _, c := range w.bootstrap() {
		mustApply(t, f, c)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				page, err := f.ListChannels("", 50, nil)
				assert.NoError(t, err)
				for _, c := range page.Channels {
					assert.LessOrEqual(t, c.Revision, page.Revision)
				}
				_, err = f.EventsSince(0, Filter{Channels: true, Nodes: true, Slots: true, Limit: 100})
				assert.NoError(t, err)
				_, err = f.Snapshot()
				assert.NoError(t, err)
				_ = f.Nodes()
				_ = f.Counts()
				_ = f.Peers(1)
			}
		}()
	}
	for range 2000 {
		_, _ = f.Apply(w.step(f))
	}
	close(done)
	wg.Wait()
}
