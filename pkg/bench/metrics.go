package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// ParseMetrics reads Prometheus text exposition and returns each sample's value keyed by its
// series as written: the metric name alone when it has no labels, else name{labels} with the
// labels as they appear. Comments, blank lines and timestamps are skipped. It is only as much
// of the format as the hibernate scenario needs (the replicas' own /metrics), but a label value
// holding spaces, braces or escaped quotes does not confuse it.
func ParseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		series, rest, err := splitSeries(line)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d: %w", n, err)
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 || len(fields) > 2 {
			return nil, fmt.Errorf("metrics line %d: %q: want a value and at most a timestamp after the series", n, line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d: value of %s: %w", n, series, err)
		}
		out[series] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return out, nil
}

// splitSeries cuts a sample line after its series (name and optional {labels}).
func splitSeries(line string) (series, rest string, err error) {
	i := strings.IndexAny(line, "{ \t")
	if i <= 0 {
		return "", "", fmt.Errorf("%q: no value", line)
	}
	if line[i] != '{' {
		return line[:i], line[i:], nil
	}
	quoted, escaped := false, false
	for j := i + 1; j < len(line); j++ {
		c := line[j]
		switch {
		case escaped:
			escaped = false
		case c == '\\' && quoted:
			escaped = true
		case c == '"':
			quoted = !quoted
		case c == '}' && !quoted:
			return line[:j+1], line[j+1:], nil
		}
	}
	return "", "", fmt.Errorf("%q: unterminated labels", line)
}

// Memory is one process's memory as its /metrics reports it.
type Memory struct {
	// RSS is process_resident_memory_bytes; HeapInuse is go_memstats_heap_inuse_bytes (Go heap
	// spans in use, live objects and not yet collected garbage alike).
	RSS       float64 `json:"rss_bytes"`
	HeapInuse float64 `json:"heap_inuse_bytes"`
}

// Add sums two processes' memory.
func (m Memory) Add(o Memory) Memory {
	return Memory{RSS: m.RSS + o.RSS, HeapInuse: m.HeapInuse + o.HeapInuse}
}

// MemoryFrom picks the memory figures out of parsed metrics.
func MemoryFrom(metrics map[string]float64) (Memory, error) {
	rss, ok := metrics["process_resident_memory_bytes"]
	if !ok {
		return Memory{}, fmt.Errorf("metrics: no process_resident_memory_bytes")
	}
	heap, ok := metrics["go_memstats_heap_inuse_bytes"]
	if !ok {
		return Memory{}, fmt.Errorf("metrics: no go_memstats_heap_inuse_bytes")
	}
	return Memory{RSS: rss, HeapInuse: heap}, nil
}

// MetricsURL turns a --replica-metrics entry into a URL: host:port gets http:// and /metrics.
func MetricsURL(s string) string {
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	if rest := s[strings.Index(s, "://")+3:]; !strings.Contains(rest, "/") {
		s += "/metrics"
	}
	return s
}

// ScrapeMemory fetches url (a /metrics endpoint) and returns the process's memory.
func ScrapeMemory(ctx context.Context, hc *http.Client, url string) (Memory, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Memory{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Memory{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Memory{}, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	m, err := ParseMetrics(resp.Body)
	if err != nil {
		return Memory{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	mem, err := MemoryFrom(m)
	if err != nil {
		return Memory{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	return mem, nil
}
