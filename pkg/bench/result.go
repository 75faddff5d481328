package bench

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Params are a scenario's parameters, as given on the command line.
type Params struct {
	Gateway        string  `json:"gateway,omitempty"`
	Dev            bool    `json:"dev"`
	Channels       int     `json:"channels"`
	Producers      int     `json:"producers"`
	Batch          int     `json:"batch"`
	Size           int     `json:"size"`
	Duration       string  `json:"duration,omitempty"`
	Messages       int64   `json:"messages,omitempty"`
	Rate           float64 `json:"rate,omitempty"`
	VerifyChannels int     `json:"verify_channels"`
}

// Latency is a latency distribution in milliseconds.
type Latency struct {
	Count uint64  `json:"count"`
	Min   float64 `json:"min_ms"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

func ms(ns int64) float64 { return float64(ns) / 1e6 }

// Summarize turns a histogram of nanoseconds into a Latency.
func Summarize(h *Histogram) Latency {
	return Latency{
		Count: h.Count(), Min: ms(h.Min()), Mean: h.Mean() / 1e6,
		P50: ms(h.Quantile(0.5)), P90: ms(h.Quantile(0.9)), P99: ms(h.Quantile(0.99)),
		P999: ms(h.Quantile(0.999)), Max: ms(h.Max()),
	}
}

// Result is everything a throughput or latency run measured, in a form to compare runs by.
type Result struct {
	Header
	Params Params `json:"params"`
	// ElapsedSeconds runs from the first send to the last answer.
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	// Sends counts acknowledged send calls; AckedMsgs and AckedBytes (payload) what they carried.
	Sends      int64   `json:"sends"`
	AckedMsgs  int64   `json:"acked_msgs"`
	AckedBytes int64   `json:"acked_bytes"`
	MsgsPerSec float64 `json:"msgs_per_sec"`
	MBPerSec   float64 `json:"mb_per_sec"`
	// Latency is per send call: from the actual send in closed-loop scenarios, from the
	// intended send time in open-loop ones (LatencyFrom says which).
	Latency      Latency          `json:"latency"`
	LatencyFrom  string           `json:"latency_from"`
	Errors       map[string]int64 `json:"errors"`
	Verification *Verification    `json:"verification,omitempty"`
}

// NewResult fills a result's machine fields and figures from a run's statistics.
func NewResult(scenario, version string, p Params, started time.Time, st *Stats) *Result {
	r := &Result{
		Header: NewHeader(scenario, version, started), Params: p,
		ElapsedSeconds: st.Elapsed.Seconds(), Sends: st.Ops, AckedMsgs: st.Msgs, AckedBytes: st.Bytes,
		Latency: Summarize(st.Latency), LatencyFrom: "actual send", Errors: st.Errors,
	}
	if p.Rate > 0 {
		r.LatencyFrom = "intended send time"
	}
	if s := st.Elapsed.Seconds(); s > 0 {
		r.MsgsPerSec = float64(st.Msgs) / s
		r.MBPerSec = float64(st.Bytes) / s / 1e6
	}
	return r
}

// WriteJSON writes the result, indented, to path.
func (r *Result) WriteJSON(path string) error {
	return writeJSON(path, r)
}

// WriteTable prints the result for a person.
func (r *Result) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := r.Params
	r.writeHead(tw, targetName(p.Dev, p.Gateway))
	load := fmt.Sprintf("%d channels, %d producers, batch %d, %d-byte messages", p.Channels, p.Producers, p.Batch, p.Size)
	if p.Rate > 0 {
		load += fmt.Sprintf(", offered %s msgs/s", group(int64(p.Rate)))
	}
	fmt.Fprintf(tw, "load\t%s\n", load)
	fmt.Fprintf(tw, "acked\t%s msgs in %s sends over %.2fs\n", group(r.AckedMsgs), group(r.Sends), r.ElapsedSeconds)
	fmt.Fprintf(tw, "throughput\t%s msgs/s, %.2f MB/s\n", group(int64(r.MsgsPerSec)), r.MBPerSec)
	l := r.Latency
	fmt.Fprintf(tw, "latency (ms, from %s)\tp50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  mean %.2f\n",
		r.LatencyFrom, l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean)
	fmt.Fprintf(tw, "errors\t%s\n", formatErrors(r.Errors))
	writeVerification(tw, r.Verification)
	return tw.Flush()
}

// writeVerification prints the read-back line, if there was a read-back.
func writeVerification(w io.Writer, v *Verification) {
	if v == nil {
		return
	}
	verdict := "OK"
	if !v.OK {
		verdict = fmt.Sprintf("FAILED: %d missing, %d duplicated, %d misplaced, %d seq gaps", v.Missing, v.Duplicated, v.Misplaced, v.Gaps)
	}
	fmt.Fprintf(w, "read-back\t%d channels, %s acked msgs checked against %s read: %s\n",
		v.Channels, group(v.Acked), group(v.Read), verdict)
	for _, e := range v.Examples {
		fmt.Fprintf(w, "\t  %s\n", e)
	}
}

func formatErrors(errs map[string]int64) string {
	if len(errs) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(errs)) {
		parts = append(parts, fmt.Sprintf("%s %s", k, group(errs[k])))
	}
	return strings.Join(parts, ", ")
}

// Group writes n with thousands separators, for progress lines of the command.
func Group(n int64) string { return group(n) }

// group writes n with thousands separators.
func group(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
