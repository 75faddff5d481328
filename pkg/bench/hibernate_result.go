package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// HibernateParams are the hibernate scenario's parameters.
type HibernateParams struct {
	Gateway  string `json:"gateway,omitempty"`
	Dev      bool   `json:"dev"`
	Channels int    `json:"channels"`
	Sample   int    `json:"sample"`
	Size     int    `json:"size"`
	// Producers is how many channels are created (and later woken) at once.
	Producers      int      `json:"producers"`
	HibernateAfter string   `json:"hibernate_after,omitempty"`
	HibernateWait  string   `json:"hibernate_wait"`
	ReplicaMetrics []string `json:"replica_metrics"`
}

// HibernateResult is what a hibernate run measured.
type HibernateResult struct {
	Header
	Params HibernateParams `json:"params"`
	// CreateSeconds is how long creating the channels with one message each took;
	// HibernateSeconds how long from then until all of them were hibernated.
	CreateSeconds    float64 `json:"create_seconds"`
	HibernateSeconds float64 `json:"hibernate_seconds"`
	// Before and After are the memory of the measured processes (summed) before the channels
	// were created and once they all hibernated; PerChannel is the difference divided by the
	// channel count. Processes is how many processes were scraped and MemoryNote how (whether
	// garbage was collected before each scrape).
	Before     Memory `json:"before"`
	After      Memory `json:"after"`
	PerChannel Memory `json:"per_channel"`
	Processes  int    `json:"processes"`
	MemoryNote string `json:"memory_note"`
	// Wake is the latency of the first send to each sampled hibernated channel.
	Wake         Latency          `json:"wake"`
	WakeErrors   map[string]int64 `json:"wake_errors"`
	Verification *Verification    `json:"verification,omitempty"`
}

// WriteJSON writes the result, indented, to path.
func (r *HibernateResult) WriteJSON(path string) error { return writeJSON(path, r) }

// WriteTable prints the result for a person.
func (r *HibernateResult) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := r.Params
	r.writeHead(tw, targetName(p.Dev, p.Gateway))
	fmt.Fprintf(tw, "load\t%s channels with one %d-byte message each, %d at a time; wake %d of them\n",
		group(int64(p.Channels)), p.Size, p.Producers, p.Sample)
	fmt.Fprintf(tw, "created\tin %.2fs; all hibernated %.2fs later\n", r.CreateSeconds, r.HibernateSeconds)
	fmt.Fprintf(tw, "memory (%d process(es))\tbefore: RSS %s, heap in use %s;  after: RSS %s, heap in use %s\n",
		r.Processes, mib(r.Before.RSS), mib(r.Before.HeapInuse), mib(r.After.RSS), mib(r.After.HeapInuse))
	fmt.Fprintf(tw, "per hibernated channel\tRSS %.0f bytes, heap in use %.0f bytes\n", r.PerChannel.RSS, r.PerChannel.HeapInuse)
	fmt.Fprintf(tw, "\t(%s)\n", r.MemoryNote)
	fmt.Fprintf(tw, "wake (ms, first send)\tp50 %.2f  p99 %.2f  max %.2f  (n=%d)\n", r.Wake.P50, r.Wake.P99, r.Wake.Max, r.Wake.Count)
	fmt.Fprintf(tw, "errors\t%s\n", formatErrors(r.WakeErrors))
	writeVerification(tw, r.Verification)
	return tw.Flush()
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }
