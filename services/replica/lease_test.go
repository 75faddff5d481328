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
			err := e.checkLease(ch)
			if tc.serves {
				require.NoError(t, err)
			} else {
				require.True(t, errors.Is(err, ErrLeaseLost), "got %v", err)
			}
		})
	}
}
