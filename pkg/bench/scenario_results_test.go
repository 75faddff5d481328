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

// roundTrip writes r as JSON and returns the raw object, checking the fields every scenario
// must carry.
func roundTrip(t *testing.T, write func(string) error) map[string]any {
	t.Helper()
	path := filepath.Join(t.TempDir(), "r.json")
	require.NoError(t, write(path))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(b, &raw))
	for _, k := range []string{"scenario", "params", "triarch_version", "num_cpu", "go_version", "started"} {
		require.Contains(t, raw, k)
	}
	return raw
}

func TestFailoverResultTableAndJSON(t *testing.T) {
	d := 812.5
	r := &FailoverResult{Header: NewHeader("failover", "v9", time.Unix(0, 0)),
		Params:     FailoverParams{Dev: true, Channels: 1000, Size: 128, Warmup: "5s", Duration: "20s"},
		KilledNode: 2, KilledAddress: "127.0.0.1:1", LedChannels: 334, KilledAtSeconds: 5, KilledBy: "stopped in-process",
		AckedMsgs: 12345, Errors: map[string]int64{}, UnavailabilityLed: SummarizeDurations([]time.Duration{time.Second, 2 * time.Second}),
		DetectionMs: &d, Election: SummarizeDurations([]time.Duration{300 * time.Millisecond}), RecoveredBeforeDead: 1,
		Verification: &Verification{Channels: 1000, Acked: 12345, Read: 12345, OK: true}}
	var b bytes.Buffer
	require.NoError(t, r.WriteTable(&b))
	for _, want := range []string{"replica 2", "334", "812.5 ms", "killed  ", "led by that node: p50", "1 of 334", "read-back", "OK"} {
		require.Contains(t, b.String(), want)
	}
	raw := roundTrip(t, r.WriteJSON)
	require.InDelta(t, 812.5, raw["detection_ms"], 0)
	require.Contains(t, raw["unavailability_led"], "p99_ms")
}

// A pause or a black hole is named as such, and the channels the node did not lead get a row
// of their own: they should not notice the fault.
func TestFailoverResultNamesTheFaultAndTheOthers(t *testing.T) {
	r := &FailoverResult{Header: NewHeader("failover", "v9", time.Unix(0, 0)),
		Params:     FailoverParams{Dev: true, Processes: true, Fault: "pause", Channels: 3, Size: 128, Warmup: "5s", Duration: "20s"},
		KilledNode: 1, LedChannels: 1, KilledBy: "pause of its process (SIGSTOP)", Errors: map[string]int64{},
		UnavailabilityOthers: SummarizeDurations([]time.Duration{30 * time.Millisecond, 40 * time.Millisecond}),
		OthersBefore:         SummarizeDurations([]time.Duration{20 * time.Millisecond}),
		OthersAfter:          SummarizeDurations([]time.Duration{25 * time.Millisecond}), OthersWindowSeconds: 2.5}
	var b bytes.Buffer
	require.NoError(t, r.WriteTable(&b))
	for _, want := range []string{"as processes", "pause after 5s", "paused  ", "SIGSTOP", "the others: p50", "the others, 2.5s before the fault: p50", "2.5s after the fault"} {
		require.Contains(t, b.String(), want)
	}
	raw := roundTrip(t, r.WriteJSON)
	require.Contains(t, raw["unavailability_others"], "p99_ms")
	require.Equal(t, "pause", raw["params"].(map[string]any)["fault"])

	for _, f := range []string{"kill", "pause", "blackhole"} {
		got, err := ParseFault(f)
		require.NoError(t, err)
		require.Equal(t, Fault(f), got)
	}
	_, err := ParseFault("unplug")
	require.ErrorContains(t, err, "want kill, pause or blackhole")
}

func TestHibernateResultTableAndJSON(t *testing.T) {
	r := &HibernateResult{Header: NewHeader("hibernate", "v9", time.Unix(0, 0)),
		Params: HibernateParams{Dev: true, Channels: 10_000, Sample: 100, Size: 128, Producers: 64, HibernateAfter: "2s"},
		Before: Memory{RSS: 100 << 20, HeapInuse: 50 << 20}, After: Memory{RSS: 120 << 20, HeapInuse: 60 << 20},
		PerChannel: Memory{RSS: 2097, HeapInuse: 1048}, Processes: 1, MemoryNote: "forced GC",
		Wake: SummarizeDurations([]time.Duration{20 * time.Millisecond}), WakeErrors: map[string]int64{}}
	var b bytes.Buffer
	require.NoError(t, r.WriteTable(&b))
	for _, want := range []string{"10,000 channels", "RSS 2097 bytes", "heap in use 1048 bytes", "forced GC", "wake (ms, first send)"} {
		require.Contains(t, b.String(), want)
	}
	raw := roundTrip(t, r.WriteJSON)
	require.Contains(t, raw["per_channel"], "rss_bytes")
}

func TestFanoutResultTableAndJSON(t *testing.T) {
	r := &FanoutResult{Header: NewHeader("fanout", "v9", time.Unix(0, 0)),
		Params:    FanoutParams{Dev: true, Channels: 10, Subscribers: 10, Producers: 16, Rate: 1000, Size: 128, Duration: "10s"},
		AckedMsgs: 10_000, Errors: map[string]int64{}, Delivery: SummarizeDurations([]time.Duration{5 * time.Millisecond}),
		Check: DeliveryCheck{Subscribers: 100, Expected: 100_000, Received: 99_999, Missing: 1, Examples: []string{"lost one"}}}
	var b bytes.Buffer
	require.NoError(t, r.WriteTable(&b))
	for _, want := range []string{"10 channels x 10 subscribers", "delivery latency", "FAILED: 1 missing", "lost one"} {
		require.Contains(t, b.String(), want)
	}
	raw := roundTrip(t, r.WriteJSON)
	require.Contains(t, raw["check"], "out_of_order")
}

func TestStartLineWritesWhatItIsGiven(t *testing.T) {
	var b syncBuffer
	p := StartLine(&b, 5*time.Millisecond, func(time.Duration) string { return "waiting: 3 of 7" })
	require.Eventually(t, func() bool { return bytes.Contains(b.Bytes(), []byte("waiting: 3 of 7")) }, 5*time.Second, 5*time.Millisecond)
	p.Stop()
	require.Nil(t, StartLine(nil, time.Second, func(time.Duration) string { return "" }))
}
