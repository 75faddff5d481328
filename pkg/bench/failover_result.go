package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// FailoverParams are the failover scenario's parameters.
type FailoverParams struct {
	Gateway  string `json:"gateway,omitempty"`
	Dev      bool   `json:"dev"`
	Channels int    `json:"channels"`
	Size     int    `json:"size"`
	// Rate is the offered rate over all channels; 0 means each channel's writer sends again as
	// soon as it is answered.
	Rate     float64 `json:"rate,omitempty"`
	Warmup   string  `json:"warmup"`
	Duration string  `json:"duration"`
	KillCmd  string  `json:"kill_cmd,omitempty"`
	// Fault is what happened to the replica: kill, pause or blackhole (see Fault); Processes
	// says the dev suite ran as processes; HealCmd undid the fault before the read-back.
	Fault     string `json:"fault,omitempty"`
	Processes bool   `json:"processes,omitempty"`
	HealCmd   string `json:"heal_cmd,omitempty"`
}

// FailoverResult is what a failover run measured.
type FailoverResult struct {
	Header
	Params FailoverParams `json:"params"`
	// KilledNode is the replica killed, KilledAddress its address, LedChannels how many of the
	// run's channels it led just before, KilledAtSeconds when (from the first send), and
	// KilledBy how (stopped in-process, or the expanded --kill-cmd).
	KilledNode      uint64  `json:"killed_node"`
	KilledAddress   string  `json:"killed_address"`
	LedChannels     int     `json:"led_channels"`
	KilledAtSeconds float64 `json:"killed_at_seconds"`
	KilledBy        string  `json:"killed_by"`
	ElapsedSeconds  float64 `json:"elapsed_seconds"`
	AckedMsgs       int64   `json:"acked_msgs"`
	// Errors counts failed sends by gRPC code (the client retries Unavailable within each
	// send's deadline first).
	Errors map[string]int64 `json:"errors"`
	// UnavailabilityLed is, over the channels the killed node led, the distribution of each
	// channel's longest gap between consecutive acks around the kill; UnavailabilityAll the
	// same over every channel. Unrecovered channels never acked again before the end.
	UnavailabilityLed Latency `json:"unavailability_led"`
	UnavailabilityAll Latency `json:"unavailability_all"`
	// UnavailabilityOthers is the same over the channels the node did not lead, which should
	// not notice the fault at all.
	UnavailabilityOthers Latency `json:"unavailability_others"`
	// OthersBefore and OthersAfter are, over the same channels, each one's longest time
	// without an ack in the OthersWindowSeconds before the fault and in as long after it
	// (WindowGap): the same channels with and without the fault, over windows of one length.
	OthersBefore        Latency `json:"others_before"`
	OthersAfter         Latency `json:"others_after"`
	OthersWindowSeconds float64 `json:"others_window_seconds"`
	Unrecovered         int     `json:"unrecovered_channels"`
	// Recovery is, per led channel, the time from the kill to its first ack after the outage.
	Recovery Latency `json:"recovery_led"`
	// DetectionMs is the time from the kill until the cluster status showed the node dead
	// (polled through the gateway, so up to one poll late); absent when it was not seen dead.
	DetectionMs *float64 `json:"detection_ms,omitempty"`
	// Election is, per led channel that recovered after the dead declaration, the time from the
	// declaration to its first ack; RecoveredBeforeDead counts the led channels that were
	// writable again before the declaration (moved on the gateway's report of an unreachable
	// leader, not on the node's death), which have no election time.
	Election            Latency       `json:"election"`
	RecoveredBeforeDead int           `json:"recovered_before_dead"`
	Verification        *Verification `json:"verification,omitempty"`
}

// WriteJSON writes the result, indented, to path.
func (r *FailoverResult) WriteJSON(path string) error { return writeJSON(path, r) }

// WriteTable prints the result for a person.
func (r *FailoverResult) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := r.Params
	target := targetName(p.Dev, p.Gateway)
	if p.Processes {
		target = "dev suite as processes (3 replicas) on loopback"
	}
	r.writeHead(tw, target)
	pace := "each writer closed-loop"
	if p.Rate > 0 {
		pace = fmt.Sprintf("offered %s msgs/s in all", group(int64(p.Rate)))
	}
	fault := p.Fault
	if fault == "" {
		fault = string(FaultKill)
	}
	fmt.Fprintf(tw, "load\t%d channels, one writer each, one %d-byte message per send, %s; %s after %s, run %s\n",
		p.Channels, p.Size, pace, fault, p.Warmup, p.Duration)
	fmt.Fprintf(tw, "%s\treplica %d (%s), leader of %d of the channels, at %.2fs, %s\n",
		faultPast(fault), r.KilledNode, r.KilledAddress, r.LedChannels, r.KilledAtSeconds, r.KilledBy)
	fmt.Fprintf(tw, "acked\t%s msgs over %.2fs\n", group(r.AckedMsgs), r.ElapsedSeconds)
	fmt.Fprintf(tw, "errors\t%s\n", formatErrors(r.Errors))
	fmt.Fprintf(tw, "unavailability (ms, longest ack gap)\tled by that node: %s\n", spread(r.UnavailabilityLed))
	fmt.Fprintf(tw, "\tall channels: %s\n", spread(r.UnavailabilityAll))
	if r.UnavailabilityOthers.Count > 0 {
		fmt.Fprintf(tw, "\tthe others: %s\n", spread(r.UnavailabilityOthers))
		if r.OthersBefore.Count > 0 {
			fmt.Fprintf(tw, "\tthe others, %.1fs before the fault: %s\n", r.OthersWindowSeconds, spread(r.OthersBefore))
			fmt.Fprintf(tw, "\tthe others, %.1fs after the fault: %s\n", r.OthersWindowSeconds, spread(r.OthersAfter))
		}
	}
	if r.Unrecovered > 0 {
		fmt.Fprintf(tw, "unrecovered\t%d channels never acked again before the end\n", r.Unrecovered)
	}
	fmt.Fprintf(tw, "recovery (ms)\tkill to first ack, per led channel: %s\n", spread(r.Recovery))
	if r.DetectionMs != nil {
		fmt.Fprintf(tw, "detection\t%.1f ms (kill to the arbiter marking the node dead, polled every 10 ms)\n", *r.DetectionMs)
		fmt.Fprintf(tw, "election (ms)\tdead to first ack, per led channel recovering after it: %s\n", spread(r.Election))
		fmt.Fprintf(tw, "\t%d of %d led channels were writable again before the node was declared dead\n",
			r.RecoveredBeforeDead, r.LedChannels)
	} else {
		fmt.Fprintf(tw, "detection\tnot observed: the cluster status never showed the node dead before the end\n")
	}
	writeVerification(tw, r.Verification)
	return tw.Flush()
}

// faultPast names the fault's row: killed, paused, black-holed.
func faultPast(f string) string {
	switch Fault(f) {
	case FaultPause:
		return "paused"
	case FaultBlackhole:
		return "black-holed"
	}
	return "killed"
}

// spread is a distribution's median, tail and worst case in milliseconds.
func spread(l Latency) string {
	if l.Count == 0 {
		return "none"
	}
	return fmt.Sprintf("p50 %.1f  p99 %.1f  max %.1f  (n=%d)", l.P50, l.P99, l.Max, l.Count)
}

// SummarizeDurations is Summarize over a slice of durations.
func SummarizeDurations(ds []time.Duration) Latency {
	h := NewHistogram()
	for _, d := range ds {
		h.RecordDuration(d)
	}
	return Summarize(h)
}
