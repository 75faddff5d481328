package liveness

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// simNode is one replica or channelctl in the simulation. It heartbeats to the arbiter at
// the interval it is told, stretched by jitter, and its peers hear from it whenever it sends.
type simNode struct {
	id uint64
	// next is when its next heartbeat reaches the arbiter; sent is when that one leaves.
	next, sent time.Time
	// lastSent is when peers last heard from it.
	lastSent time.Time
	// lastArrival is when the arbiter last heard from it.
	lastArrival time.Time
	interval    time.Duration
	jitter      float64 // ±fraction of the interval
	crashAt     time.Time
	crashed     bool
	arbiterCut  bool // heartbeats to the arbiter are lost; peers still hear it
}

type timedDecision struct {
	At time.Time
	Decision
}

type sim struct {
	tb        testing.TB
	tr        *Tracker
	rng       *rand.Rand
	now       time.Time
	tick      time.Time
	nodes     []*simNode
	peers     map[uint64][]uint64
	committed map[uint64]arbiterv1.NodeState
	log       []timedDecision
	// maxDelay bounds the one-way network delay, drawn uniformly from [0.1 ms, maxDelay].
	maxDelay time.Duration
}

// newSim builds n nodes (ids 1..n), each a peer of every other when fullMesh.
func newSim(tb testing.TB, cfg Config, seed uint64, n int, jitter float64, fullMesh bool) *sim {
	tb.Helper()
	tr, err := New(cfg)
	require.NoError(tb, err)
	s := &sim{
		tb: tb, tr: tr, rng: rand.New(rand.NewPCG(seed, 1)), now: t0, tick: t0.Add(cfg.EvaluateEvery),
		peers: map[uint64][]uint64{}, committed: map[uint64]arbiterv1.NodeState{}, maxDelay: 2 * time.Millisecond,
	}
	for id := uint64(1); id <= uint64(n); id++ {
		tr.Observe(id, alive, t0)
		iv := tr.Register(id, t0)
		s.committed[id] = alive
		nd := &simNode{id: id, interval: iv, jitter: jitter, lastSent: t0, lastArrival: t0}
		s.schedule(nd, t0)
		s.nodes = append(s.nodes, nd)
		if fullMesh {
			for p := uint64(1); p <= uint64(n); p++ {
				if p != id {
					s.peers[id] = append(s.peers[id], p)
				}
			}
		}
	}
	return s
}

func (s *sim) delay() time.Duration {
	return 100*time.Microsecond + time.Duration(s.rng.Int64N(int64(s.maxDelay-100*time.Microsecond)+1))
}

// schedule plans the node's next heartbeat after one sent at from.
func (s *sim) schedule(nd *simNode, from time.Time) {
	f := 1 + nd.jitter*(2*s.rng.Float64()-1)
	nd.sent = from.Add(time.Duration(float64(nd.interval) * f))
	nd.next = nd.sent.Add(s.delay())
}

func (s *sim) node(id uint64) *simNode { return s.nodes[id-1] }

// runUntil processes heartbeats and evaluation ticks in time order up to end.
func (s *sim) runUntil(end time.Time) {
	for {
		var nd *simNode
		for _, c := range s.nodes {
			if !c.crashed && (nd == nil || c.next.Before(nd.next)) {
				nd = c
			}
		}
		if nd != nil && nd.next.Before(s.tick) {
			if nd.next.After(end) {
				s.now = end
				return
			}
			s.now = nd.next
			s.beat(nd)
			continue
		}
		if s.tick.After(end) {
			s.now = end
			return
		}
		s.now = s.tick
		s.evaluate()
		s.tick = s.tick.Add(s.tr.Config().EvaluateEvery)
	}
}

func (s *sim) beat(nd *simNode) {
	if !nd.crashAt.IsZero() && !nd.sent.Before(nd.crashAt) {
		nd.crashed = true
		return
	}
	nd.lastSent = nd.sent
	if !nd.arbiterCut {
		var reports []PeerReport
		for _, p := range s.peers[nd.id] {
			reports = append(reports, PeerReport{Node: p, Reachable: true, Age: max(nd.sent.Sub(s.node(p).lastSent), 0)})
		}
		rtt := 2 * (s.now.Sub(nd.sent))
		nd.interval = s.tr.Heartbeat(Heartbeat{Node: nd.id, Now: s.now, RTT: rtt, Peers: reports})
		nd.lastArrival = s.now
	}
	s.schedule(nd, nd.sent)
}

// evaluate runs the leader's tick; decisions commit at once.
func (s *sim) evaluate() {
	for _, d := range s.tr.Evaluate(s.now, func(id uint64) []uint64 { return s.peers[id] }) {
		s.log = append(s.log, timedDecision{At: s.now, Decision: d})
		s.committed[d.Node] = d.State
		s.tr.Observe(d.Node, d.State, s.now)
	}
}

func (s *sim) decisionsFor(id uint64) []timedDecision {
	var out []timedDecision
	for _, d := range s.log {
		if d.Node == id {
			out = append(out, d)
		}
	}
	return out
}

// Heartbeats jittering by ±50% (and a noisy network) for 10 simulated minutes: not one
// suspicion, let alone a death.
func TestJitterNeverDeclares(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		s := newSim(t, DefaultConfig(), seed, 5, 0.5, true)
		s.maxDelay = 20 * time.Millisecond
		s.runUntil(t0.Add(10 * time.Minute))
		require.Empty(t, s.log, "seed %d", seed)
		for _, nd := range s.nodes {
			st, ok := s.tr.Stats(nd.id)
			require.True(t, ok)
			require.Equal(t, DefaultConfig().Window, st.Samples)
			require.Less(t, st.Interval, DefaultConfig().MaxInterval, "node %d: jitter must shorten the interval", nd.id)
			require.GreaterOrEqual(t, st.Interval, DefaultConfig().MinInterval)
		}
	}
}

// A node that crashes is declared dead after its lease plus margin and within 1 s (p99) of its
// last heartbeat, over many crashes at random moments with jittered heartbeats; nobody else is
// declared anything.
func TestCrashDetectionLatency(t *testing.T) {
	cfg := DefaultConfig()
	trials := 400
	if testing.Short() {
		trials = 100
	}
	var lat []time.Duration
	for trial := range trials {
		s := newSim(t, cfg, uint64(trial), 5, 0.5, true)
		s.runUntil(t0.Add(2*time.Second + time.Duration(s.rng.Int64N(int64(time.Second)))))
		victim := s.node(uint64(1 + s.rng.IntN(5)))
		victim.crashAt = s.now.Add(time.Duration(s.rng.Int64N(int64(300 * time.Millisecond))))
		s.runUntil(victim.crashAt.Add(3 * time.Second))

		var deadAt time.Time
		for _, d := range s.log {
			require.Equal(t, victim.id, d.Node, "trial %d: false declaration %+v", trial, d)
			if d.State == dead {
				deadAt = d.At
			}
		}
		require.False(t, deadAt.IsZero(), "trial %d: crash never detected: %+v", trial, s.log)
		l := deadAt.Sub(victim.lastArrival)
		require.Greater(t, l, cfg.LeaseTTL+cfg.DriftMargin, "trial %d: declared before TTL+margin", trial)
		lat = append(lat, l)
	}
	slices.Sort(lat)
	p50, p99, worst := lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	t.Logf("last heartbeat → dead over %d crashes: p50 %v, p99 %v, max %v", len(lat), p50, p99, worst)
	require.LessOrEqual(t, p99, time.Second)
}

// A node whose link to the arbiter is cut while its peers still reach it is suspect at most,
// for as long as the cut lasts, and alive again once it heals.
func TestArbiterLinkCutNeverDead(t *testing.T) {
	s := newSim(t, DefaultConfig(), 9, 4, 0.5, true)
	s.runUntil(t0.Add(5 * time.Second))
	cutAt := s.now
	s.node(2).arbiterCut = true
	s.runUntil(cutAt.Add(10 * time.Minute))
	s.node(2).arbiterCut = false
	s.runUntil(s.now.Add(2 * time.Second))

	ds := s.decisionsFor(2)
	require.Len(t, ds, 2, "%+v", s.log)
	require.Equal(t, suspect, ds[0].State)
	require.Equal(t, alive, ds[1].State)
	require.Len(t, s.log, 2, "nobody else is declared: %+v", s.log)
	require.Contains(t, ds[0].Reason, "lease expired")
}

// The same cut, but the node also stops reaching its peers (cut off from everyone): dead.
func TestIsolatedNodeDeclaredDead(t *testing.T) {
	cfg := DefaultConfig()
	s := newSim(t, cfg, 10, 4, 0.2, true)
	s.runUntil(t0.Add(5 * time.Second))
	s.node(3).crashAt = s.now // from the others' side, isolation looks like a crash
	s.runUntil(s.now.Add(3 * time.Second))
	ds := s.decisionsFor(3)
	require.NotEmpty(t, ds)
	last := ds[len(ds)-1]
	require.Equal(t, dead, last.State)
	require.Contains(t, last.Reason, "3 of 3 live peers cannot reach it")
}
