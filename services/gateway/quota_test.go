package gateway

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/triarch-io/triarch/pkg/auth"
)

func retryDelayOf(t *testing.T, err error) time.Duration {
	t.Helper()
	st := status.Convert(err)
	require.Equal(t, codes.ResourceExhausted, st.Code(), err)
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

func TestRequestRatePerCaller(t *testing.T) {
	now := time.Unix(1000, 0)
	q := newQuotas(QuotaConfig{RequestsPerSecond: 10, RequestBurst: 2}, func() time.Time { return now })
	for range 2 {
		_, err := q.admit("a", auth.Send)
		require.NoError(t, err)
	}
	_, err := q.admit("a", auth.Read)
	require.Equal(t, 100*time.Millisecond, retryDelayOf(t, err), "the next token is 100 ms away")
	_, err = q.admit("b", auth.Send)
	require.NoError(t, err, "callers have buckets of their own")
	now = now.Add(100 * time.Millisecond)
	_, err = q.admit("a", auth.Send)
	require.NoError(t, err)
	_, err = q.admit("a", auth.Send)
	require.Error(t, err, "a refused call took no token, so only one came back")
}

func TestCreateRateLeavesOtherCallsAlone(t *testing.T) {
	now := time.Unix(1000, 0)
	q := newQuotas(QuotaConfig{CreatesPerSecond: 1}, func() time.Time { return now })
	for range 10 {
		_, err := q.admit("a", auth.Create)
		require.NoError(t, err)
	}
	_, err := q.admit("a", auth.Create)
	require.Equal(t, time.Second, retryDelayOf(t, err))
	for range 100 {
		_, err := q.admit("a", auth.Send)
		require.NoError(t, err)
	}
}

func TestSubscriptionsPerCaller(t *testing.T) {
	q := newQuotas(QuotaConfig{MaxSubscriptions: 2}, nil)
	r1, err := q.admit("a", auth.Subscribe)
	require.NoError(t, err)
	r2, err := q.admit("a", auth.Subscribe)
	require.NoError(t, err)
	_, err = q.admit("a", auth.Subscribe)
	require.Equal(t, codes.ResourceExhausted, status.Code(err))
	require.Zero(t, retryDelayOf(t, err), "a full set of subscriptions frees up when one ends, not at a time")
	_, err = q.admit("b", auth.Subscribe)
	require.NoError(t, err)
	r1()
	r1() // a second release gives nothing back twice
	_, err = q.admit("a", auth.Subscribe)
	require.NoError(t, err)
	_, err = q.admit("a", auth.Subscribe)
	require.Error(t, err)
	r2()
}

func TestNoQuotasNoState(t *testing.T) {
	q := newQuotas(QuotaConfig{}, nil)
	for range 1000 {
		release, err := q.admit("a", auth.Subscribe)
		require.NoError(t, err)
		release()
	}
	require.Empty(t, q.callers)
	var nilQ *quotas
	_, err := nilQ.admit("a", auth.Send)
	require.NoError(t, err)
}

func TestIdleCallersAreEvicted(t *testing.T) {
	now := time.Unix(1000, 0)
	q := newQuotas(QuotaConfig{RequestsPerSecond: 1, MaxSubscriptions: 1}, func() time.Time { return now })
	_, err := q.admit("idle", auth.Send)
	require.NoError(t, err)
	_, err = q.admit("subscribed", auth.Subscribe)
	require.NoError(t, err)
	now = now.Add(2 * time.Minute)
	q.mu.Lock()
	q.evictIdle(now)
	_, idle := q.callers["idle"]
	_, subscribed := q.callers["subscribed"]
	q.mu.Unlock()
	require.False(t, idle)
	require.True(t, subscribed, "a caller holding a subscription keeps its count")
}
