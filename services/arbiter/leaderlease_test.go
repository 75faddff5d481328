package arbiter

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/services/arbiter/fsm"
	"github.com/triarch-io/triarch/services/arbiter/liveness"
)

func TestQuorumAckedAt(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ago := func(ms int) time.Time { return now.Add(-time.Duration(ms) * time.Millisecond) }
	for name, tc := range map[string]struct {
		voters []uint64
		acked  map[uint64]time.Time
		want   time.Time
	}{
		"alone":                      {[]uint64{1}, nil, now},
		"three, both acked":          {[]uint64{1, 2, 3}, map[uint64]time.Time{2: ago(10), 3: ago(300)}, ago(10)},
		"three, one acked":           {[]uint64{1, 2, 3}, map[uint64]time.Time{3: ago(40)}, ago(40)},
		"three, none":                {[]uint64{1, 2, 3}, nil, time.Time{}},
		"five, needs two others":     {[]uint64{1, 2, 3, 4, 5}, map[uint64]time.Time{2: ago(5), 3: ago(50), 4: ago(500)}, ago(50)},
		"acks of non-voters ignored": {[]uint64{1, 2, 3}, map[uint64]time.Time{9: ago(1), 2: ago(700)}, ago(700)},
	} {
		t.Run(name, func(t *testing.T) {
			require.Equal(t, tc.want, quorumAckedAt(now, 1, tc.voters, tc.acked))
		})
	}
}

// Issue 13, item 2: a member that raft still calls leader but that no quorum acknowledged
// within the lease window (cut off with some nodes while the others elect a successor) must
// not renew node leases: it used to answer every heartbeat until CheckQuorum deposed it, so a
// node cut off with it kept a valid lease after its channels were re-elected.
func TestHeartbeatRenewsOnlyUnderALeaderLease(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg := Config{Common: process.Common{NodeID: 1}, Peers: map[uint64]string{1: "a:1", 2: "b:1", 3: "c:1"},
		TickInterval: 50 * time.Millisecond, ElectionTicks: 10, Liveness: liveness.DefaultConfig()}
	s := &Service{cfg: cfg, fsm: fsm.New(), now: func() time.Time { return now }}
	var err error
	s.tracker, err = liveness.New(cfg.Liveness)
	require.NoError(t, err)
	s.repl = newMetaApplier(1, s.fsm)
	s.repl.log = scriptedLog{leader: 1}
	_, err = s.fsm.Apply(fsm.RegisterNodeCommand(5, arbiterv1.NodeRole_NODE_ROLE_REPLICA, "r5:7600", "", now))
	require.NoError(t, err)
	acked := map[uint64]time.Time{}
	s.acked = func() map[uint64]time.Time { return acked }
	h := &handler{s: s}
	beat := func() error {
		_, err := h.Heartbeat(context.Background(), &arbiterv1.HeartbeatRequest{NodeId: 5})
		return err
	}
	require.Equal(t, 250*time.Millisecond, s.leaseWindow(), "half the election timeout")

	acked[2], acked[3] = now.Add(-100*time.Millisecond), now.Add(-time.Hour)
	require.NoError(t, beat(), "member 2 acknowledged within the window")

	acked[2] = now.Add(-300 * time.Millisecond)
	err = beat()
	require.Equal(t, codes.Unavailable, status.Code(err), err)
	require.Contains(t, err.Error(), "may have been replaced")

	acked[3] = now.Add(-time.Millisecond)
	require.NoError(t, beat(), "a quorum is back")
}
