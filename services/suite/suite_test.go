package suite

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/pkg/telemetry"
)

// StopReplica takes one replica down the way a crash looks to the cluster: the arbiter stops
// hearing from it and declares it dead; the others stay up, and Stop still stops everything.
func TestStopReplicaLooksLikeACrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a suite")
	}
	ctx := context.Background()
	tel, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: "suite-test", NodeID: 1, LogWriter: io.Discard, LogLevel: slog.LevelError})
	require.NoError(t, err)
	s, err := Start(ctx, Config{DataDir: t.TempDir(), HTTPAddr: loopback, GRPCAddr: loopback, AdminAddr: loopback}, tel)
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Stop(ctx)) }()

	require.Len(t, s.ReplicaAdminAddrs(), Replicas)
	require.Error(t, s.StopReplica(ctx, 0))
	require.Error(t, s.StopReplica(ctx, Replicas+1))
	require.NoError(t, s.StopReplica(ctx, 2))
	require.Eventually(t, func() bool {
		n, ok := s.Arbiter.FSM().Node(2)
		return ok && n.Liveness == arbiterv1.NodeState_NODE_STATE_DEAD
	}, 10*time.Second, 10*time.Millisecond)
	for _, id := range []uint64{1, 3} {
		n, _ := s.Arbiter.FSM().Node(id)
		require.Equal(t, arbiterv1.NodeState_NODE_STATE_ALIVE, n.Liveness, "node %d", id)
	}
}
