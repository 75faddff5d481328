package bench

import "fmt"

// Delivery is one message as a subscriber received it, in the order received.
type Delivery struct {
	Seq         uint64
	ClientMsgID string
}

// DeliveryCheck is the outcome of comparing what subscribers received with what was
// acknowledged: each subscriber must get every acknowledged message of its channel exactly
// once, at its seq, in seq order, with no seq skipped.
type DeliveryCheck struct {
	Subscribers int `json:"subscribers"`
	// Expected is acknowledged messages times the subscribers of their channel; Received all
	// deliveries (messages committed but not acknowledged, a send that failed after its commit,
	// may be among them; they are not a problem).
	Expected int64 `json:"expected"`
	Received int64 `json:"received"`
	// Missing acknowledged messages never reached a subscriber; Duplicated ones reached it more
	// than once; Misplaced ones came with another seq than acknowledged; OutOfOrder counts
	// deliveries whose seq was not above the previous one, Skipped the seqs a stream jumped
	// over (counted from seq 1, where subscriptions start).
	Missing    int64    `json:"missing"`
	Duplicated int64    `json:"duplicated"`
	Misplaced  int64    `json:"misplaced"`
	OutOfOrder int64    `json:"out_of_order"`
	Skipped    int64    `json:"skipped"`
	Examples   []string `json:"examples,omitempty"`
	OK         bool     `json:"ok"`
}

func (d *DeliveryCheck) problem(format string, args ...any) {
	if len(d.Examples) < maxExamples {
		d.Examples = append(d.Examples, fmt.Sprintf(format, args...))
	}
}

// Add checks one subscriber (sub, of channel) that subscribed from seq 1 and received got,
// against the channel's acknowledged messages.
func (d *DeliveryCheck) Add(channel string, sub int, acked []Ack, got []Delivery) {
	d.Subscribers++
	d.Expected += int64(len(acked))
	d.Received += int64(len(got))
	var prev uint64 // seq 0: nothing received yet
	seqs := make(map[string][]uint64, len(got))
	for _, m := range got {
		switch {
		case m.Seq <= prev:
			d.OutOfOrder++
			d.problem("%s subscriber %d: seq %d after seq %d", channel, sub, m.Seq, prev)
		case m.Seq > prev+1:
			d.Skipped += int64(m.Seq - prev - 1)
			d.problem("%s subscriber %d: seqs %d..%d skipped", channel, sub, prev+1, m.Seq-1)
		}
		prev = max(prev, m.Seq)
		seqs[m.ClientMsgID] = append(seqs[m.ClientMsgID], m.Seq)
	}
	for _, a := range acked {
		got := seqs[a.ClientMsgID]
		switch {
		case len(got) == 0:
			d.Missing++
			d.problem("%s subscriber %d: acked %s at seq %d never delivered", channel, sub, a.ClientMsgID, a.Seq)
		case len(got) > 1:
			d.Duplicated++
			d.problem("%s subscriber %d: acked %s at seq %d delivered %d times (seqs %v)", channel, sub, a.ClientMsgID, a.Seq, len(got), got)
		case got[0] != a.Seq:
			d.Misplaced++
			d.problem("%s subscriber %d: acked %s at seq %d delivered at seq %d", channel, sub, a.ClientMsgID, a.Seq, got[0])
		}
	}
}

// Finish sets OK from the counts.
func (d *DeliveryCheck) Finish() {
	d.OK = d.Missing == 0 && d.Duplicated == 0 && d.Misplaced == 0 && d.OutOfOrder == 0 && d.Skipped == 0
}
