package multiraft

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/triarch-io/triarch/pkg/raftstore"
)

type nopTransport struct{}

func (nopTransport) Send([]Envelope) {}

type lastApplier struct {
	mu   sync.Mutex
	last map[uint64]uint64
	data map[uint64]string
}

func (a *lastApplier) Apply(batch []Committed) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range batch {
		for _, e := range c.Entries {
			a.last[c.GroupID] = e.GetIndex()
			a.data[e.GetIndex()] = string(e.GetData())
		}
	}
	return nil
}

func (a *lastApplier) Applied(g uint64) (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last[g], nil
}

func settle(t *testing.T, h *Host) {
	t.Helper()
	for range 100 {
		worked, err := h.ProcessRound()
		if err != nil {
			t.Fatal(err)
		}
		if !worked {
			return
		}
	}
	t.Fatal("host does not settle")
}

// If the index predicted for a proposal were ever wrong, the check against the next Ready
// must fail the proposal instead of leaving it to wait on (or succeed at) another entry's
// position. A single-voter group needs no network.
func TestWrongPredictionFailsTheProposal(t *testing.T) {
	app := &lastApplier{last: map[uint64]uint64{}, data: map[uint64]string{}}
	h, err := New(Config{NodeID: 1, Store: raftstore.NewMemory(), Transport: nopTransport{}, Applier: app, Manual: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := h.LoadGroup(ctx, GroupSpec{GroupID: 5, Voters: []uint64{1}}); err != nil {
		t.Fatal(err)
	}
	if err := h.Campaign(ctx, 5); err != nil {
		t.Fatal(err)
	}
	settle(t, h)

	ok := h.ProposeAsync(5, []byte("right"))
	settle(t, h)
	if idx, err := ok.Result(); err != nil || idx != 3 {
		t.Fatalf("proposal with a right prediction: %d, %v; want 3", idx, err)
	}

	h.shardFor(5).groups[5].lastIndex++ // the prediction is now one too high
	p := h.ProposeAsync(5, []byte("mispredicted"))
	settle(t, h)
	if _, err := p.Result(); !errors.Is(err, ErrLeadershipLost) {
		t.Fatalf("mispredicted proposal: %v, want ErrLeadershipLost", err)
	}
	if app.data[4] != "mispredicted" {
		t.Fatalf("the entry itself should still be applied at 4; applied %q", app.data[4])
	}
	if _, _, _, w := h.GroupStateForTest(); w != 0 {
		t.Fatalf("%d waiters left", w)
	}
}
