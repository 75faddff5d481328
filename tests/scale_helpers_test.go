package tests

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/internal/testcluster"
)

// parallel runs f(0..n-1) on at most workers goroutines and returns the errors joined (f keeps
// running for the other indexes after one fails, so one slow channel does not hide others).
func parallel(n, workers int, f func(i int) error) error {
	var (
		next atomic.Int64
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 10 {
		errs = append(errs[:10], fmt.Errorf("and %d more errors", len(errs)-10))
	}
	return errors.Join(errs...)
}

// logPos is where one replica's raft log of a channel ends: raft's vote rule compares exactly
// this, by last term and then last index.
type logPos struct{ term, index uint64 }

func posOf(st *replicav1.GroupStatus) logPos { return logPos{st.GetLastTerm(), st.GetLastIndex()} }

func (p logPos) compare(q logPos) int {
	if c := cmp.Compare(p.term, q.term); c != 0 {
		return c
	}
	return cmp.Compare(p.index, q.index)
}

func (p logPos) String() string { return fmt.Sprintf("(term %d, index %d)", p.term, p.index) }

// survivorPositions reads, on every replica still running, the log positions of the channels
// the stopped victim led. With their leader gone nothing appends to these logs until the next
// election, so the positions are the ones that election compares; the read is repeated until
// two passes agree, so that frames the victim sent just before it stopped have landed.
func survivorPositions(ctx context.Context, c *testcluster.Cluster, channels []string) (map[string]map[uint64]logPos, error) {
	read := func() (map[string]map[uint64]logPos, error) {
		out := make(map[string]map[uint64]logPos, len(channels))
		for _, id := range channels {
			out[id] = map[uint64]logPos{}
			for n, r := range c.Replicas() {
				st, err := r.Engine.GroupStatus(ctx, id)
				if err != nil {
					return nil, fmt.Errorf("status of %s on %d: %w", id, n, err)
				}
				out[id][n] = posOf(st)
			}
		}
		return out, nil
	}
	prev, err := read()
	for err == nil {
		var cur map[string]map[uint64]logPos
		if cur, err = read(); err != nil {
			break
		}
		same := true
		for id := range cur {
			for n := range cur[id] {
				same = same && cur[id][n] == prev[id][n]
			}
		}
		if same {
			return cur, nil
		}
		prev = cur
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return nil, err
}

// quantiles returns the p50, p99 and max of ds (sorted in place), in milliseconds.
func quantiles(ds []time.Duration) (p50, p99, maxMs float64) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return ms(ds[len(ds)/2]), ms(ds[(len(ds)*99)/100]), ms(ds[len(ds)-1])
}
