package verify

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
)

// Entry is one message of a channel's final log.
type Entry struct {
	Seq uint64
	ID  string
}

// StaleReads reports every read that stopped short of a message acknowledged before the read
// began: from seq From on it returned fewer messages than its limit, so it claims the log ended
// there, at From-1+len(Got), below the highest seq acknowledged before its call. Reads from the
// middle count as much as reads from the start (a read from seq 75 answering nothing while 134
// messages were acknowledged was caught only by the linearizability check before).
func StaleReads(ops []Op) error {
	type ack struct {
		at  int64
		seq uint64
	}
	acks := map[string][]ack{}
	for _, op := range ops {
		if op.Kind == Send && op.Known && len(op.Seqs) > 0 {
			acks[op.Channel] = append(acks[op.Channel], ack{int64(op.Return), slices.Max(op.Seqs)})
		}
	}
	// best[ch][i] is the highest seq acknowledged by the i+1 earliest acknowledgements.
	best := map[string][]uint64{}
	for ch, as := range acks {
		sort.Slice(as, func(i, j int) bool { return as[i].at < as[j].at })
		b := make([]uint64, len(as))
		for i, a := range as {
			b[i] = a.seq
			if i > 0 {
				b[i] = max(b[i], b[i-1])
			}
		}
		acks[ch], best[ch] = as, b
	}
	var errs []error
	for _, op := range ops {
		if op.Kind != Read || len(op.Got) >= op.Limit {
			continue
		}
		as := acks[op.Channel]
		n := sort.Search(len(as), func(i int) bool { return as[i].at >= int64(op.Call) })
		if n == 0 {
			continue
		}
		end := max(op.From, 1) - 1 + uint64(len(op.Got))
		if acked := best[op.Channel][n-1]; end < acked {
			errs = append(errs, fmt.Errorf("%s: stale read by client %d at %v: from seq %d, %d messages (the log ending at %d), %d acknowledged before it began",
				op.Channel, op.Client, op.Call, max(op.From, 1), len(op.Got), end, acked))
		}
	}
	return errors.Join(errs...)
}

// ExactlyOnce checks each channel's final log against the history: sequence numbers
// contiguous from 1, no id stored twice, every acknowledged message at the seq it was
// acknowledged with, and nothing stored that no client sent.
func ExactlyOnce(ops []Op, final map[string][]Entry) error {
	sent := map[string]map[string]bool{}
	acked := map[string]map[uint64]string{}
	for _, op := range ops {
		if op.Kind != Send {
			continue
		}
		if sent[op.Channel] == nil {
			sent[op.Channel], acked[op.Channel] = map[string]bool{}, map[uint64]string{}
		}
		for i, id := range op.IDs {
			sent[op.Channel][id] = true
			if op.Known {
				acked[op.Channel][op.Seqs[i]] = id
			}
		}
	}
	var errs []error
	for _, ch := range slices.Sorted(maps.Keys(sent)) {
		log := final[ch]
		where := map[string]uint64{}
		for i, e := range log {
			if e.Seq != uint64(i+1) {
				errs = append(errs, fmt.Errorf("%s: message %d has seq %d", ch, i, e.Seq))
				break
			}
			if prev, dup := where[e.ID]; dup {
				errs = append(errs, fmt.Errorf("%s: %q stored twice, at seqs %d and %d", ch, e.ID, prev, e.Seq))
			}
			where[e.ID] = e.Seq
			if !sent[ch][e.ID] {
				errs = append(errs, fmt.Errorf("%s: seq %d holds %q, which no client sent", ch, e.Seq, e.ID))
			}
		}
		for _, seq := range slices.Sorted(maps.Keys(acked[ch])) {
			id := acked[ch][seq]
			if got, ok := where[id]; !ok {
				errs = append(errs, fmt.Errorf("%s: %q acknowledged at seq %d is lost", ch, id, seq))
			} else if got != seq {
				errs = append(errs, fmt.Errorf("%s: %q acknowledged at seq %d is stored at %d", ch, id, seq, got))
			}
		}
	}
	return errors.Join(errs...)
}
