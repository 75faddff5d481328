package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// FanoutParams are the fanout scenario's parameters.
type FanoutParams struct {
	Gateway     string  `json:"gateway,omitempty"`
	Dev         bool    `json:"dev"`
	Channels    int     `json:"channels"`
	Subscribers int     `json:"subscribers_per_channel"`
	Producers   int     `json:"producers"`
	Rate        float64 `json:"rate"`
	Size        int     `json:"size"`
	Duration    string  `json:"duration,omitempty"`
	Messages    int64   `json:"messages,omitempty"`
}

// FanoutResult is what a fanout run measured.
type FanoutResult struct {
	Header
	Params         FanoutParams     `json:"params"`
	ElapsedSeconds float64          `json:"elapsed_seconds"`
	AckedMsgs      int64            `json:"acked_msgs"`
	Errors         map[string]int64 `json:"errors"`
	// SendLatency is per send, from its intended time (open loop); Delivery per delivery, from
	// the send's actual start (stamped in the payload) to its receipt by a subscriber.
	SendLatency Latency `json:"send_latency"`
	Delivery    Latency `json:"delivery"`
	// Resubscribes counts subscription streams that broke and were opened again.
	Resubscribes int64         `json:"resubscribes"`
	Check        DeliveryCheck `json:"check"`
}

// WriteJSON writes the result, indented, to path.
func (r *FanoutResult) WriteJSON(path string) error { return writeJSON(path, r) }

// WriteTable prints the result for a person.
func (r *FanoutResult) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := r.Params
	r.writeHead(tw, targetName(p.Dev, p.Gateway))
	fmt.Fprintf(tw, "load\t%d channels x %d subscribers, %d producers, offered %s msgs/s, %d-byte messages\n",
		p.Channels, p.Subscribers, p.Producers, group(int64(p.Rate)), p.Size)
	fmt.Fprintf(tw, "acked\t%s msgs over %.2fs\n", group(r.AckedMsgs), r.ElapsedSeconds)
	fmt.Fprintf(tw, "errors\t%s\n", formatErrors(r.Errors))
	l := r.SendLatency
	fmt.Fprintf(tw, "send latency (ms, from intended send time)\tp50 %.2f  p99 %.2f  max %.2f\n", l.P50, l.P99, l.Max)
	d := r.Delivery
	fmt.Fprintf(tw, "delivery latency (ms, send start to receipt)\tp50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  (%s deliveries)\n",
		d.P50, d.P99, d.P999, d.Max, group(int64(d.Count)))
	c := r.Check
	verdict := "OK"
	if !c.OK {
		verdict = fmt.Sprintf("FAILED: %d missing, %d duplicated, %d misplaced, %d out of order, %d skipped",
			c.Missing, c.Duplicated, c.Misplaced, c.OutOfOrder, c.Skipped)
	}
	fmt.Fprintf(tw, "delivery check\t%d subscribers, %s expected, %s received, %d resubscribes: %s\n",
		c.Subscribers, group(c.Expected), group(c.Received), r.Resubscribes, verdict)
	for _, e := range c.Examples {
		fmt.Fprintf(tw, "\t  %s\n", e)
	}
	return tw.Flush()
}
