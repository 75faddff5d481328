package bench

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const sampleMetrics = `# HELP go_memstats_heap_inuse_bytes Number of heap bytes that are in use.
# TYPE go_memstats_heap_inuse_bytes gauge
go_memstats_heap_inuse_bytes 1.2345678e+07

# HELP process_resident_memory_bytes Resident memory size in bytes.
process_resident_memory_bytes 5.4321e+07
rpc_calls_total{method="Send",code="OK"} 17 1700000000000
odd_labels{path="/a b}",quote="say \"}\" now"} 2.5
go_gc_duration_seconds{quantile="0.5"} NaN
`

func TestParseMetrics(t *testing.T) {
	m, err := ParseMetrics(strings.NewReader(sampleMetrics))
	require.NoError(t, err)
	require.InDelta(t, 12_345_678, m["go_memstats_heap_inuse_bytes"], 0)
	require.InDelta(t, 54_321_000, m["process_resident_memory_bytes"], 0)
	require.InDelta(t, 17, m[`rpc_calls_total{method="Send",code="OK"}`], 0, "the timestamp is not the value")
	require.InDelta(t, 2.5, m[`odd_labels{path="/a b}",quote="say \"}\" now"}`], 0)
	require.Contains(t, m, `go_gc_duration_seconds{quantile="0.5"}`)
	require.Len(t, m, 5)

	mem, err := MemoryFrom(m)
	require.NoError(t, err)
	require.Equal(t, Memory{RSS: 54_321_000, HeapInuse: 12_345_678}, mem)
	require.Equal(t, Memory{RSS: 2 * 54_321_000, HeapInuse: 2 * 12_345_678}, mem.Add(mem))
}

func TestParseMetricsRefusesGarbage(t *testing.T) {
	for _, in := range []string{"novalue\n", "x{a=\"1\" 3\n", "x notanumber\n", "x 1 2 3\n", "x{a=\"1\"}\n"} {
		_, err := ParseMetrics(strings.NewReader(in))
		require.Error(t, err, "%q", in)
	}
	_, err := MemoryFrom(map[string]float64{"process_resident_memory_bytes": 1})
	require.ErrorContains(t, err, "go_memstats_heap_inuse_bytes")
}

func TestMetricsURL(t *testing.T) {
	require.Equal(t, "http://10.0.0.2:7601/metrics", MetricsURL("10.0.0.2:7601"))
	require.Equal(t, "https://r1:7601/metrics", MetricsURL("https://r1:7601"))
	require.Equal(t, "http://r1:7601/custom", MetricsURL("http://r1:7601/custom"))
}

func TestScrapeMemory(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, sampleMetrics)
	}))
	defer srv.Close()
	mem, err := ScrapeMemory(context.Background(), srv.Client(), MetricsURL(srv.URL))
	require.NoError(t, err)
	require.InDelta(t, 54_321_000, mem.RSS, 0)
	_, err = ScrapeMemory(context.Background(), srv.Client(), srv.URL+"/nope")
	require.ErrorContains(t, err, "404")
}
