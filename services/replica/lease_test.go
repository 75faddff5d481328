package replica

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type fakeLease struct{ valid bool }

func (f fakeLease) Valid(time.Time) bool { return f.valid }

type fakePeers map[uint64]time.Time

func (fakePeers) SetPeer(uint64, string)            {}
func (f fakePeers) LastHeard() map[uint64]time.Time { return f }

// The serving half of the one-leader rule: a leader serves while its node lease is current OR
// it heard from a quorum of its group within the lease TTL; cut off from both, it stops.
func TestLeaderStopsServingWithoutLeaseAndQuorum(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ttl := 600 * time.Millisecond
	ch := &channel{id: "c", voters: []uint64{1, 2, 3}}
	for _, tc := range []struct {
		name   string
		lease  bool
		heard  fakePeers
		serves bool
	}{
		{"lease current, peers silent (cut off from the group only)", true, fakePeers{}, true},
		{"lease lapsed, one peer heard: a quorum with itself (cut off from the arbiter only)", false,
			fakePeers{2: now.Add(-100 * time.Millisecond)}, true},
		{"lease lapsed, peers heard too long ago", false,
			fakePeers{2: now.Add(-ttl), 3: now.Add(-time.Second)}, false},
		{"lease lapsed, nobody heard", false, fakePeers{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEngine(EngineConfig{NodeID: 1, LeaseTTL: ttl, Now: func() time.Time { return now }})
			e.Attach(nil, tc.heard, fakeLease{tc.lease})
			// The same answers counted as the group's own (a read) or as any frame from the
			// peer (an append) decide alike.
			for name, acked := range map[string]map[uint64]time.Time{"group": tc.heard, "transport": nil} {
				err := e.checkLease(ch, acked)
				if tc.serves {
					require.NoError(t, err, name)
				} else {
					require.True(t, errors.Is(err, ErrLeaseLost), "%s: got %v", name, err)
				}
			}
		})
	}
}

// A read counts only the group's own acknowledgements: peers that answer this node for other
// groups (the transport heard them just now) may follow another leader of this one.
func TestReadCountsContactWithinTheGroupOnly(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ttl := 600 * time.Millisecond
	ch := &channel{id: "c", voters: []uint64{1, 2, 3}}
	e := NewEngine(EngineConfig{NodeID: 1, LeaseTTL: ttl, Now: func() time.Time { return now }})
	e.Attach(nil, fakePeers{2: now, 3: now}, fakeLease{false})
	require.NoError(t, e.checkLease(ch, nil), "an append may try: the transport hears a quorum")
	err := e.checkLease(ch, map[uint64]time.Time{3: now.Add(-time.Second)})
	require.True(t, errors.Is(err, ErrLeaseLost), "a read without contact in its group: got %v", err)
	require.NoError(t, e.checkLease(ch, map[uint64]time.Time{2: now.Add(-100 * time.Millisecond)}))
}
