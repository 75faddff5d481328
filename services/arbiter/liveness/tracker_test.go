package liveness

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

func newTracker(t *testing.T, cfg Config) *Tracker {
	t.Helper()
	tr, err := New(cfg)
	require.NoError(t, err)
	return tr
}

func noPeers(uint64) []uint64 { return nil }

// states returns the decided state per node.
func states(ds []Decision) map[uint64]arbiterv1.NodeState {
	out := map[uint64]arbiterv1.NodeState{}
	for _, d := range ds {
		out[d.Node] = d.State
	}
	return out
}

// A node that stops heartbeating: nothing before its lease ends, suspect from then until
// TTL+margin inclusive, dead just after — with peers confirming, and with no peers at all.
func TestDeclaredDeadAfterTTLPlusMarginNotBefore(t *testing.T) {
	cfg := DefaultConfig()
	ttl, margin := cfg.LeaseTTL, cfg.DriftMargin
	for name, withPeers := range map[string]bool{"peers confirm": true, "no peers": false} {
		for _, tc := range []struct {
			at   time.Duration // after the last heartbeat
			want arbiterv1.NodeState
		}{
			{ttl - time.Nanosecond, arbiterv1.NodeState_NODE_STATE_UNSPECIFIED},
			{ttl, suspect},
			{ttl + margin/2, suspect},
			{ttl + margin, suspect},
			{ttl + margin + time.Nanosecond, dead},
			{ttl + margin + 10*time.Millisecond, dead},
		} {
			t.Run(name+"/"+tc.at.String(), func(t *testing.T) {
				tr := newTracker(t, cfg)
				for id := uint64(1); id <= 4; id++ {
					tr.Observe(id, alive, t0)
					tr.Register(id, t0)
				}
				now := t0.Add(tc.at)
				peers := noPeers
				if withPeers {
					peers = func(id uint64) []uint64 {
						if id == 1 {
							return []uint64{2, 3, 4}
						}
						return nil
					}
					// The peers are alive and say they cannot reach node 1.
					for id := uint64(2); id <= 4; id++ {
						tr.Heartbeat(Heartbeat{Node: id, Now: now, Peers: []PeerReport{{Node: 1, Reachable: false, Age: tc.at}}})
					}
				} else {
					for id := uint64(2); id <= 4; id++ {
						tr.Heartbeat(Heartbeat{Node: id, Now: now})
					}
				}
				got := states(tr.Evaluate(now, peers))
				if tc.want == arbiterv1.NodeState_NODE_STATE_UNSPECIFIED {
					require.Empty(t, got)
				} else {
					require.Equal(t, map[uint64]arbiterv1.NodeState{1: tc.want}, got)
				}
			})
		}
	}
}

// The peer rule, case by case: node 1's lease ended TTL+margin+1ms ago; who says what?
func TestPeerConfirmation(t *testing.T) {
	type peer struct {
		reachable bool
		age       time.Duration // how long the peer has not heard from node 1
		reportAgo time.Duration // how old the peer's report is
		expired   bool          // the peer's own lease has run out
		dead      bool          // the peer is committed dead
		silent    bool          // the peer never reported about node 1
	}
	cannot := peer{reachable: false, age: time.Second}
	can := peer{reachable: true, age: 10 * time.Millisecond}
	for name, tc := range map[string]struct {
		peers  []peer
		cfg    func(*Config)
		extra  []uint64 // added to node 1's peer list as is
		want   arbiterv1.NodeState
		reason string
	}{
		"2 of 3 cannot":             {peers: []peer{cannot, cannot, can}, want: dead, reason: "2 of 3 live peers"},
		"1 of 3 cannot":             {peers: []peer{cannot, can, can}, want: suspect, reason: "only 1 of 3"},
		"2 of 4 is no majority":     {peers: []peer{cannot, cannot, can, can}, want: suspect},
		"3 of 4 cannot":             {peers: []peer{cannot, cannot, cannot, can}, want: dead},
		"all reach it":              {peers: []peer{can, can, can}, want: suspect},
		"silent peers do not count": {peers: []peer{cannot, {silent: true}, {silent: true}}, want: suspect},
		"reachable but silent for long counts": {
			peers: []peer{{reachable: true, age: 400 * time.Millisecond}, {reachable: true, age: time.Second}, can}, want: dead},
		"reachable, heard recently": {
			peers: []peer{{reachable: true, age: 399 * time.Millisecond}, can, can}, want: suspect},
		"stale reports are ignored": {
			peers: []peer{{age: time.Second, reportAgo: 601 * time.Millisecond}, {age: time.Second, reportAgo: 700 * time.Millisecond}, can}, want: suspect},
		"fresh enough reports count": {
			peers: []peer{{age: time.Second, reportAgo: 600 * time.Millisecond}, {age: time.Second, reportAgo: 500 * time.Millisecond}, can}, want: dead},
		"expired peers are left out": {
			// One live witness that cannot reach it; the other two crashed along with it.
			cfg:   func(c *Config) { c.ReportMaxAge = 10 * time.Second },
			peers: []peer{cannot, {reachable: true, age: 0, expired: true}, {reachable: true, age: 0, expired: true}}, want: dead, reason: "1 of 1"},
		"dead peers are left out": {
			peers: []peer{cannot, {reachable: true, dead: true}, {reachable: true, dead: true}}, want: dead, reason: "1 of 1"},
		"all peers expired: no witness": {
			cfg:   func(c *Config) { c.ReportMaxAge = 10 * time.Second },
			peers: []peer{{age: time.Second, expired: true}, {age: time.Second, expired: true}}, want: suspect, reason: "none of 2 peers is live"},
		"no peers: the lease alone": {peers: nil, want: dead, reason: "no peers"},
		"self and duplicates in the peer list": {
			peers: []peer{cannot, can}, extra: []uint64{1, 2, 2}, want: suspect, reason: "only 1 of 2"},
		"unknown peer ids are not witnesses": {
			peers: []peer{cannot}, extra: []uint64{77}, want: dead, reason: "1 of 1"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			tr := newTracker(t, cfg)
			tr.Observe(1, alive, t0)
			tr.Register(1, t0)
			now := t0.Add(cfg.LeaseTTL + cfg.DriftMargin + time.Millisecond)
			var ids []uint64
			for i, p := range tc.peers {
				id := uint64(10 + i)
				ids = append(ids, id)
				state := alive
				if p.dead {
					state = dead
				}
				tr.Observe(id, state, t0)
				at := now.Add(-p.reportAgo)
				if p.expired {
					at = now.Add(-cfg.LeaseTTL - time.Millisecond)
				}
				hb := Heartbeat{Node: id, Now: at}
				if !p.silent {
					hb.Peers = []PeerReport{{Node: 1, Reachable: p.reachable, Age: p.age}}
				}
				tr.Heartbeat(hb)
				if !p.expired && at.Before(now) {
					tr.Heartbeat(Heartbeat{Node: id, Now: now}) // keeps the lease, no new report
				}
			}
			ids = append(ids, tc.extra...)
			var ds []Decision
			for _, d := range tr.Evaluate(now, func(id uint64) []uint64 {
				if id == 1 {
					return ids
				}
				return nil
			}) {
				if d.Node == 1 {
					ds = append(ds, d)
				}
			}
			require.Len(t, ds, 1)
			require.Equal(t, tc.want, ds[0].State, ds[0].Reason)
			require.Contains(t, ds[0].Reason, tc.reason)
		})
	}
}

// A leader change (ResetAll, or a new Tracker that learns the nodes with Observe) never
// declares anyone by itself: every lease restarts from the takeover.
func TestResetAllAfterLeaderChange(t *testing.T) {
	cfg := DefaultConfig()
	for name, takeover := range map[string]func(tr *Tracker, now time.Time) *Tracker{
		"ResetAll on the same tracker": func(tr *Tracker, now time.Time) *Tracker {
			tr.ResetAll(now)
			return tr
		},
		"fresh tracker on the new leader": func(_ *Tracker, now time.Time) *Tracker {
			tr := newTracker(t, cfg)
			for id := uint64(1); id <= 3; id++ {
				tr.Observe(id, alive, now)
			}
			return tr
		},
	} {
		t.Run(name, func(t *testing.T) {
			tr := newTracker(t, cfg)
			for id := uint64(1); id <= 3; id++ {
				tr.Observe(id, alive, t0)
				tr.Register(id, t0)
			}
			// The old leader went away; the new one takes over when node 1's lease is long
			// gone (it would be dead by now) and nodes 2, 3 are healthy.
			takeoverAt := t0.Add(2 * time.Second)
			tr = takeover(tr, takeoverAt)
			for at := takeoverAt; at.Before(takeoverAt.Add(cfg.LeaseTTL)); at = at.Add(cfg.EvaluateEvery) {
				tr.Heartbeat(Heartbeat{Node: 2, Now: at})
				tr.Heartbeat(Heartbeat{Node: 3, Now: at})
				require.Empty(t, tr.Evaluate(at, noPeers), "at %v after takeover", at.Sub(takeoverAt))
			}
			// Node 1 never heartbeats again: its fresh lease runs out like any other.
			now := takeoverAt.Add(cfg.LeaseTTL + cfg.DriftMargin + time.Nanosecond)
			tr.Heartbeat(Heartbeat{Node: 2, Now: now})
			tr.Heartbeat(Heartbeat{Node: 3, Now: now})
			require.Equal(t, map[uint64]arbiterv1.NodeState{1: dead}, states(tr.Evaluate(now, noPeers)))
		})
	}
}

// A grace lease protects but does not revive: a node committed suspect or dead comes back only
// when it heartbeats or registers again.
func TestReviveNeedsContact(t *testing.T) {
	for _, committed := range []arbiterv1.NodeState{suspect, dead} {
		for name, contact := range map[string]func(tr *Tracker, now time.Time){
			"heartbeat": func(tr *Tracker, now time.Time) { tr.Heartbeat(Heartbeat{Node: 1, Now: now}) },
			"register":  func(tr *Tracker, now time.Time) { tr.Register(1, now) },
		} {
			t.Run(committed.String()+"/"+name, func(t *testing.T) {
				tr := newTracker(t, DefaultConfig())
				tr.Observe(1, committed, t0)
				now := t0.Add(time.Second)
				tr.ResetAll(now)
				require.Empty(t, tr.Evaluate(now, noPeers))
				require.Empty(t, tr.Evaluate(now.Add(100*time.Millisecond), noPeers))
				contact(tr, now.Add(200*time.Millisecond))
				ds := tr.Evaluate(now.Add(200*time.Millisecond), noPeers)
				require.Equal(t, []Decision{{Node: 1, State: alive, Reason: "heartbeats again"}}, ds)
			})
		}
	}
}

// A decision is proposed once, again only if it is still not committed after ResendAfter, and
// never after Observe shows it committed. Draining counts as alive.
func TestDecisionsNotRepeated(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ResendAfter = 100 * time.Millisecond // shorter than the margin, to see suspect resent
	tr := newTracker(t, cfg)
	tr.Observe(1, arbiterv1.NodeState_NODE_STATE_DRAINING, t0)
	tr.Register(1, t0)
	at := t0.Add(cfg.LeaseTTL)
	require.Equal(t, map[uint64]arbiterv1.NodeState{1: suspect}, states(tr.Evaluate(at, noPeers)))
	require.Empty(t, tr.Evaluate(at.Add(cfg.EvaluateEvery), noPeers), "proposal in flight")
	require.Equal(t, map[uint64]arbiterv1.NodeState{1: suspect}, states(tr.Evaluate(at.Add(cfg.ResendAfter), noPeers)), "lost proposal: again")
	tr.Observe(1, suspect, at.Add(cfg.ResendAfter))
	require.Empty(t, tr.Evaluate(at.Add(cfg.ResendAfter+cfg.EvaluateEvery), noPeers))
	// Dead is a new decision, proposed at once.
	deadAt := t0.Add(cfg.LeaseTTL + cfg.DriftMargin + time.Millisecond)
	require.Equal(t, map[uint64]arbiterv1.NodeState{1: dead}, states(tr.Evaluate(deadAt.Add(cfg.ResendAfter), noPeers)))
	tr.Observe(1, dead, deadAt)
	require.Empty(t, tr.Evaluate(deadAt.Add(time.Hour), noPeers), "dead stays dead without contact")
}

// Nodes the FSM has not confirmed (heartbeats before registration is applied) and forgotten
// nodes are never judged.
func TestUnobservedAndForgotten(t *testing.T) {
	tr := newTracker(t, DefaultConfig())
	tr.Heartbeat(Heartbeat{Node: 1, Now: t0})
	tr.Observe(2, alive, t0)
	tr.Heartbeat(Heartbeat{Node: 3, Now: t0, Peers: []PeerReport{{Node: 2, Reachable: false, Age: time.Hour}}})
	tr.Forget(2)
	require.Empty(t, tr.Evaluate(t0.Add(time.Hour), noPeers))
	_, ok := tr.Lease(2)
	require.False(t, ok)
	exp, ok := tr.Lease(1)
	require.True(t, ok)
	require.Equal(t, t0.Add(DefaultConfig().LeaseTTL), exp)
}

// The interval adapts: calm links heartbeat least often, noise and loss shorten it, never
// outside [min, max].
func TestAdaptiveInterval(t *testing.T) {
	cfg := DefaultConfig()
	type link struct {
		jitter float64 // ±fraction of the told interval
		rtt    func(r *rand.Rand) time.Duration
		loss   int // every loss-th heartbeat is lost (0: none)
	}
	fixedRTT := func(*rand.Rand) time.Duration { return time.Millisecond }
	measure := func(l link) time.Duration {
		tr := newTracker(t, cfg)
		tr.Observe(1, alive, t0)
		iv := tr.Register(1, t0)
		require.Equal(t, cfg.BaseInterval, iv, "before samples: the base interval")
		r := rand.New(rand.NewPCG(5, 6))
		now := t0
		for i := 1; i <= 500; i++ {
			now = now.Add(time.Duration(float64(iv) * (1 + l.jitter*(2*r.Float64()-1))))
			if l.loss > 0 && i%l.loss == 0 {
				continue
			}
			iv = tr.Heartbeat(Heartbeat{Node: 1, Now: now, RTT: l.rtt(r)})
			require.GreaterOrEqual(t, iv, cfg.MinInterval)
			require.LessOrEqual(t, iv, cfg.MaxInterval)
		}
		require.Equal(t, iv, tr.Interval(1))
		return iv
	}
	calm := measure(link{rtt: fixedRTT})
	jittery := measure(link{jitter: 0.5, rtt: fixedRTT})
	lossy := measure(link{jitter: 0.1, rtt: fixedRTT, loss: 5})
	slowRTT := measure(link{rtt: func(r *rand.Rand) time.Duration { return time.Duration(r.Int64N(int64(200 * time.Millisecond))) }})
	awful := measure(link{jitter: 0.9, rtt: func(r *rand.Rand) time.Duration { return time.Duration(r.Int64N(int64(500 * time.Millisecond))) }})
	t.Logf("intervals: calm %v, ±50%% jitter %v, 20%% loss %v, rtt 0-200ms %v, awful %v", calm, jittery, lossy, slowRTT, awful)

	require.Equal(t, cfg.MaxInterval, calm)
	require.Less(t, jittery, calm)
	require.Less(t, lossy, calm)
	require.Less(t, slowRTT, calm)
	require.Equal(t, cfg.MinInterval, awful)
	// Under ±50% jitter even one lost heartbeat plus the worst jitter stays inside the TTL.
	require.Less(t, time.Duration(2.5*float64(jittery)), cfg.LeaseTTL)
	require.Equal(t, cfg.BaseInterval, newTracker(t, cfg).Interval(42), "unknown node")
}

// Re-registration starts a new link: the old statistics go.
func TestRegisterResetsStatistics(t *testing.T) {
	cfg := DefaultConfig()
	tr := newTracker(t, cfg)
	now := t0
	iv := tr.Register(1, now)
	for range 20 {
		now = now.Add(iv) // an obedient node on a perfect link
		iv = tr.Heartbeat(Heartbeat{Node: 1, Now: now, RTT: time.Millisecond})
	}
	st, _ := tr.Stats(1)
	require.Equal(t, 20, st.Samples)
	require.Equal(t, time.Millisecond, st.MeanRTT)
	require.Zero(t, st.MeanLateness)
	require.Equal(t, cfg.MaxInterval, st.Interval)
	require.Equal(t, cfg.BaseInterval, tr.Register(1, now.Add(time.Minute)))
	st, _ = tr.Stats(1)
	require.Zero(t, st.Samples)
	require.Zero(t, st.MeanRTT)
	// Gaps beyond the TTL (an outage) are not samples either.
	tr.Heartbeat(Heartbeat{Node: 1, Now: now.Add(2 * time.Minute)})
	st, _ = tr.Stats(1)
	require.Zero(t, st.Samples)
}

func TestPhi(t *testing.T) {
	cfg := DefaultConfig()
	tr := newTracker(t, cfg)
	rng := rand.New(rand.NewPCG(1, 1))
	now := map[uint64]time.Time{1: t0, 2: t0}
	for range 64 {
		now[1] = now[1].Add(200 * time.Millisecond) // calm
		tr.Heartbeat(Heartbeat{Node: 1, Now: now[1]})
		now[2] = now[2].Add(time.Duration(100+rng.IntN(200)) * time.Millisecond) // noisy
		tr.Heartbeat(Heartbeat{Node: 2, Now: now[2]})
	}
	require.Zero(t, tr.Phi(3, t0), "unknown node")
	prev := -1.0
	for _, after := range []time.Duration{200, 205, 210, 220, 250, 300} {
		p := tr.Phi(1, now[1].Add(after*time.Millisecond))
		require.Greater(t, p, prev, "phi grows with silence")
		prev = p
	}
	// 100 ms late is alarming on a calm link, ordinary on a noisy one.
	require.Greater(t, tr.Phi(1, now[1].Add(300*time.Millisecond)), 8.0)
	require.Less(t, tr.Phi(2, now[2].Add(300*time.Millisecond)), 3.0)
}

func TestConfigValidate(t *testing.T) {
	require.NoError(t, DefaultConfig().Validate())
	for name, mut := range map[string]func(*Config){
		"ttl 0":                  func(c *Config) { c.LeaseTTL = 0 },
		"negative margin":        func(c *Config) { c.DriftMargin = -1 },
		"min 0":                  func(c *Config) { c.MinInterval = 0 },
		"base below min":         func(c *Config) { c.BaseInterval = c.MinInterval - 1 },
		"max below base":         func(c *Config) { c.MaxInterval = c.BaseInterval - 1 },
		"max above half the ttl": func(c *Config) { c.MaxInterval = c.LeaseTTL/2 + 1 },
		"peer silence 0":         func(c *Config) { c.PeerSilence = 0 },
		"evaluate every 0":       func(c *Config) { c.EvaluateEvery = 0 },
		"window below samples":   func(c *Config) { c.Window = c.MinSamples - 1 },
		"one sample":             func(c *Config) { c.MinSamples = 1 },
		"negative sigmas":        func(c *Config) { c.JitterSigmas = -1 },
	} {
		t.Run(name, func(t *testing.T) {
			c := DefaultConfig()
			mut(&c)
			require.Error(t, c.Validate())
			_, err := New(c)
			require.ErrorContains(t, err, "liveness config")
		})
	}
}

// An arbiter that was itself stalled (Evaluate not called for longer than half a lease) does
// not count the stall against anyone: nodes whose heartbeats it could not process meanwhile
// keep their leases for the length of the stall, and are judged by the usual rule after it.
func TestArbiterStallIsNotCountedAgainstNodes(t *testing.T) {
	cfg := DefaultConfig()
	ttl, margin := cfg.LeaseTTL, cfg.DriftMargin
	start := func() *Tracker {
		tr := newTracker(t, cfg)
		tr.Observe(1, alive, t0)
		tr.Register(1, t0)
		return tr
	}
	// evaluate runs Evaluate every EvaluateEvery over [from, to] and returns the last state
	// decided for node 1 (unspecified: none).
	evaluate := func(tr *Tracker, from, to time.Time) arbiterv1.NodeState {
		var last arbiterv1.NodeState
		for at := from; !at.After(to); at = at.Add(cfg.EvaluateEvery) {
			if st, ok := states(tr.Evaluate(at, noPeers))[1]; ok {
				last = st
			}
		}
		return last
	}
	late := t0.Add(ttl + margin + cfg.EvaluateEvery)

	// Evaluated regularly, the silent node is dead just past TTL + margin.
	require.Equal(t, dead, evaluate(start(), t0, late))

	// The same silence, but the arbiter stalled from t0 to late: nothing is decided.
	tr := start()
	require.Empty(t, tr.Evaluate(t0, noPeers))
	require.Empty(t, tr.Evaluate(late, noPeers), "the stall ate the lease, not the node")
	// Still silent a full lease and margin after the stall: now it is dead.
	require.Equal(t, dead, evaluate(tr, late, late.Add(ttl+margin+cfg.EvaluateEvery)))
}

// A member that leads again after an hour is not "stalled" for that hour: ResetAll forgets the
// last evaluation, and a silent node is declared one lease and margin after the takeover.
// Time spent acting on decisions (Evaluated) is not credited either.
func TestStallCreditIsBoundedAndNotCarriedAcrossLeadership(t *testing.T) {
	cfg := DefaultConfig()
	ttl, margin := cfg.LeaseTTL, cfg.DriftMargin
	tr := newTracker(t, cfg)
	tr.Observe(1, alive, t0)
	tr.Register(1, t0)
	tr.Evaluate(t0, noPeers)
	back := t0.Add(time.Hour)
	tr.ResetAll(back)
	var last arbiterv1.NodeState
	for at := back; !at.After(back.Add(ttl + margin + cfg.EvaluateEvery)); at = at.Add(cfg.EvaluateEvery) {
		if st, ok := states(tr.Evaluate(at, noPeers))[1]; ok {
			last = st
		}
	}
	require.Equal(t, dead, last, "declared a lease and margin after the takeover, not an hour later")

	// Acting on decisions for a whole lease between two evaluations is not a stall.
	tr = newTracker(t, cfg)
	tr.Observe(1, alive, t0)
	tr.Register(1, t0)
	tr.Evaluate(t0, noPeers)
	tr.Evaluated(t0.Add(ttl))
	require.Equal(t, dead, states(tr.Evaluate(t0.Add(ttl+margin+cfg.EvaluateEvery), noPeers))[1])
}
