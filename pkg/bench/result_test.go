package bench

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func sampleResult() *Result {
	h := NewHistogram()
	for i := int64(1); i <= 1000; i++ {
		h.Record(i * 1_000_000)
	}
	st := &Stats{Ops: 1000, Msgs: 100_000, Bytes: 12_800_000, Errors: map[string]int64{"Unavailable": 2},
		Latency: h, Elapsed: 4 * time.Second}
	r := NewResult("throughput", "v1.2.3", Params{Dev: true, Channels: 10, Producers: 4, Batch: 100, Size: 128,
		Duration: "4s", VerifyChannels: 10}, time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), st)
	r.Verification = &Verification{Channels: 10, Acked: 1000, Read: 1001, Missing: 1, Examples: []string{"x"}}
	return r
}

func TestResultJSONRoundTrips(t *testing.T) {
	r := sampleResult()
	require.InDelta(t, 25_000, r.MsgsPerSec, 1e-9)
	require.InDelta(t, 3.2, r.MBPerSec, 1e-9)
	require.InDelta(t, 500, r.Latency.P50, 500.0/subCount)
	path := filepath.Join(t.TempDir(), "r.json")
	require.NoError(t, r.WriteJSON(path))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var back Result
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, *r, back)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(b, &raw))
	for _, k := range []string{"scenario", "params", "triarch_version", "num_cpu", "msgs_per_sec", "latency", "errors", "verification"} {
		require.Contains(t, raw, k)
	}
	require.Contains(t, raw["latency"], "p99_9_ms")
}

func TestResultTable(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, sampleResult().WriteTable(&b))
	out := b.String()
	for _, want := range []string{"throughput", "25,000 msgs/s", "3.20 MB/s", "Unavailable 2", "FAILED: 1 missing", "p99.9"} {
		require.Contains(t, out, want)
	}
	require.Equal(t, "1,234,567", group(1234567))
	require.Equal(t, "-1,000", group(-1000))
	require.Equal(t, "12", group(12))
}

func TestProgressWritesALiveLine(t *testing.T) {
	var b syncBuffer
	live := &Live{}
	live.Msgs.Store(500)
	p := StartProgress(&b, live, 5*time.Millisecond)
	require.Eventually(t, func() bool { return bytes.Contains(b.Bytes(), []byte("500 acked")) }, 5*time.Second, time.Millisecond)
	p.Stop()
	require.True(t, bytes.HasPrefix(b.Bytes(), []byte("\r")))
	var nilP *Progress
	nilP.Stop()
	require.Nil(t, StartProgress(nil, live, time.Second))
	f, err := os.CreateTemp(t.TempDir(), "x")
	require.NoError(t, err)
	require.False(t, IsTerminal(f))
	require.NoError(t, f.Close())
}
