package bench

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// Small values are exact: 1..100 gives the textbook percentiles.
func TestHistogramExactBelowSubBuckets(t *testing.T) {
	h := NewHistogram()
	for _, v := range rand.New(rand.NewPCG(1, 2)).Perm(100) {
		h.Record(int64(v + 1))
	}
	require.Equal(t, uint64(100), h.Count())
	require.Equal(t, int64(1), h.Min())
	require.Equal(t, int64(50), h.Quantile(0.50))
	require.Equal(t, int64(90), h.Quantile(0.90))
	require.Equal(t, int64(99), h.Quantile(0.99))
	require.Equal(t, int64(100), h.Quantile(0.999))
	require.Equal(t, int64(100), h.Max())
	require.InDelta(t, 50.5, h.Mean(), 1e-9)
}

// Large values are within the bucket precision (1/128) of the true percentile, never below it.
func TestHistogramRelativeErrorOnLargeValues(t *testing.T) {
	h := NewHistogram()
	const n = 100_000
	for i := int64(1); i <= n; i++ {
		h.Record(i * 1000) // 1 µs .. 100 ms
	}
	for _, tc := range []struct {
		q    float64
		want int64
	}{{0.5, 50_000_000}, {0.9, 90_000_000}, {0.99, 99_000_000}, {0.999, 99_900_000}} {
		got := h.Quantile(tc.q)
		require.GreaterOrEqual(t, got, tc.want, "q %v", tc.q)
		require.LessOrEqual(t, float64(got-tc.want)/float64(tc.want), 1.0/subCount, "q %v: %d vs %d", tc.q, got, tc.want)
	}
	require.Equal(t, int64(n*1000), h.Max())
}

// A few slow outliers show in p99.9 and max but not in p50.
func TestHistogramOutliersAndMerge(t *testing.T) {
	a, b := NewHistogram(), NewHistogram()
	for range 9990 {
		a.Record(1_000_000) // 1 ms
	}
	for range 10 {
		b.Record(500_000_000) // 500 ms
	}
	a.Merge(b)
	a.Merge(NewHistogram())
	require.Equal(t, uint64(10_000), a.Count())
	require.InDelta(t, 1_000_000, a.Quantile(0.5), 1_000_000/subCount)
	require.InDelta(t, 1_000_000, a.Quantile(0.99), 1_000_000/subCount)
	require.InDelta(t, 500_000_000, a.Quantile(0.9995), 500_000_000/subCount)
	require.Equal(t, int64(500_000_000), a.Max())
	require.Equal(t, int64(1_000_000), a.Min())
}

func TestHistogramEmptyAndNegative(t *testing.T) {
	h := NewHistogram()
	require.Zero(t, h.Quantile(0.5))
	require.Zero(t, h.Min())
	h.Record(-5)
	require.Zero(t, h.Max())
	require.Equal(t, uint64(1), h.Count())
	h.Record(1 << 62)
	require.Equal(t, int64(1<<62), h.Quantile(1))
	require.Equal(t, int64(1<<62), h.Quantile(0.99))
}
