package verify

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Gap is the longest pause in acknowledgements on any channel around one fault event.
type Gap struct {
	Event Event
	Gap   time.Duration
}

// Unavailability measures, for each event, the longest gap between consecutive acknowledged
// sends of any one channel that overlaps the event or the settle time after it.
func Unavailability(ops []Op, events []Event, settle time.Duration) []Gap {
	acks := map[string][]time.Duration{}
	for _, op := range ops {
		if op.Kind == Send && op.Known {
			acks[op.Channel] = append(acks[op.Channel], op.Return)
		}
	}
	for _, a := range acks {
		slices.Sort(a)
	}
	out := make([]Gap, 0, len(events))
	for _, e := range events {
		from, to := e.At, e.At+e.For+settle
		var worst time.Duration
		for _, a := range acks {
			i := sort.Search(len(a), func(i int) bool { return a[i] >= from })
			if i > 0 {
				i-- // the gap that the event began in
			}
			for ; i+1 < len(a) && a[i] <= to; i++ {
				worst = max(worst, a[i+1]-a[i])
			}
		}
		out = append(out, Gap{Event: e, Gap: worst})
	}
	return out
}

// WriteUnavailability prints the gaps as a table per fault (a partition's with its shape) and
// tier: count, p50, p99, max.
func WriteUnavailability(w io.Writer, gaps []Gap) error {
	type key struct {
		fault string
		tier  string
	}
	by := map[key][]time.Duration{}
	var order []key
	for _, g := range gaps {
		k := key{g.Event.Label(), g.Event.Target.Tier}
		if _, ok := by[k]; !ok {
			order = append(order, k)
		}
		by[k] = append(by[k], g.Gap)
	}
	slices.SortFunc(order, func(a, b key) int {
		if a.fault != b.fault {
			return strings.Compare(a.fault, b.fault)
		}
		return strings.Compare(a.tier, b.tier)
	})
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "fault\ttier\tcount\tp50\tp99\tmax\t")
	for _, k := range order {
		d := by[k]
		slices.Sort(d)
		fmt.Fprintf(tw, "%s\t%s\t%d\t%v\t%v\t%v\t\n", k.fault, k.tier, len(d),
			quantile(d, 0.5).Round(time.Millisecond), quantile(d, 0.99).Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond))
	}
	return tw.Flush()
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted)) + 0.5)
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}
