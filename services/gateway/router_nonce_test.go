package gateway

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// Every attempt of one Append carries the same non-zero nonce, across a NotLeader hop, a
// failed attempt and a re-resolve; another Append draws another.
func TestRouterAppendKeepsTheSendsNonceAcrossAttempts(t *testing.T) {
	c := newFakeCluster()
	c.setLeader("a", 1)
	var (
		mu     sync.Mutex
		nonces []uint64
		failed bool
	)
	c.appendFn = func(addr string, req *replicav1.AppendRequest) (*replicav1.AppendResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		nonces = append(nonces, req.GetNonce())
		switch {
		case addr == "r1":
			return nil, notLeaderErr("a", 2)
		case !failed:
			failed = true
			return nil, status.Error(codes.Unavailable, "answer lost")
		}
		return c.defaultAppend("r1", req)
	}
	r := c.router(t, RouterConfig{})
	_, err := r.Append(context.Background(), "a", one)
	require.NoError(t, err)
	mu.Lock()
	first := nonces
	nonces = nil
	mu.Unlock()
	require.GreaterOrEqual(t, len(first), 3, "r1, r2 that failed, then the retry")
	require.NotZero(t, first[0])
	for _, n := range first {
		require.Equal(t, first[0], n)
	}
	_, err = r.Append(context.Background(), "a", one)
	require.NoError(t, err)
	require.NotEmpty(t, nonces)
	require.NotEqual(t, first[0], nonces[0], "another send draws another nonce")
}
