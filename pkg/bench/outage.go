package bench

import (
	"slices"
	"sync"
	"time"
)

// AckTimes records, per channel, when each acknowledgement arrived (as an offset from the
// run's start), for the failover scenario's gap analysis. It is safe for concurrent use; each
// channel normally has one writer, so the lock is not contended.
type AckTimes struct {
	mu    sync.Mutex
	start time.Time
	at    map[string][]time.Duration
}

// NewAckTimes starts recording; offsets are taken from start.
func NewAckTimes(start time.Time) *AckTimes {
	return &AckTimes{start: start, at: map[string][]time.Duration{}}
}

// Record notes an acknowledgement of channel at t.
func (a *AckTimes) Record(channel string, t time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.at[channel] = append(a.at[channel], t.Sub(a.start))
}

// Of returns channel's acknowledgement offsets, in the order recorded.
func (a *AckTimes) Of(channel string) []time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.at[channel])
}

// Outage is one channel's unavailability around a kill.
type Outage struct {
	// Gap is the longest time between two consecutive acknowledgements where the later one
	// came after the kill; when no acknowledgement came after the kill, it runs from the last
	// one to the end of the run and Recovered is false.
	Gap time.Duration
	// From and To bound that gap (offsets like the acknowledgements'); To is the first
	// acknowledgement after the outage, the moment the channel was writable again.
	From, To  time.Duration
	Recovered bool
}

// LongestGap finds a channel's outage around a kill at offset kill, from its acknowledgement
// offsets acks (any order) in a run that ended at offset end. Only gaps that end after the kill
// count: a slow acknowledgement during the warm-up says nothing about the failover. A channel
// with no acknowledgement before the kill has its gap start at the kill itself, so it is not
// charged for its own start-up.
func LongestGap(acks []time.Duration, kill, end time.Duration) Outage {
	acks = slices.Clone(acks)
	slices.Sort(acks)
	// prev is where the gap that the next acknowledgement closes began.
	prev := kill
	i, _ := slices.BinarySearch(acks, kill+1) // first ack strictly after the kill
	if i > 0 {
		prev = acks[i-1]
	}
	var o Outage
	for _, t := range acks[i:] {
		if g := t - prev; !o.Recovered || g > o.Gap {
			o = Outage{Gap: g, From: prev, To: t, Recovered: true}
		}
		prev = t
	}
	if !o.Recovered {
		o = Outage{Gap: max(end-prev, 0), From: prev, To: end}
	}
	return o
}

// Recoveries is, for each recovered outage, the time from the kill to the channel's first
// acknowledgement after it: how long the channel was unwritable as the kill caused it, not
// counting the part of its gap before the kill.
func Recoveries(outages []Outage, kill time.Duration) []time.Duration {
	var out []time.Duration
	for _, o := range outages {
		if o.Recovered {
			out = append(out, max(o.To-kill, 0))
		}
	}
	return out
}

// Split divides the outages of the channels the killed node led into detection and election:
// detection is the time from the kill to the arbiter declaring the node dead (declared, an
// offset; zero or before the kill when it was never seen dead, and then nothing is split:
// ok is false), and a channel's election is the rest, from the declaration to its first
// acknowledgement after the outage. A channel that recovered before the declaration (the
// control tier moved it on a report that its leader was unreachable, without waiting for the
// node's death) has no election time; early counts those. Channels that never recovered are
// in neither.
func Split(outages []Outage, kill, declared time.Duration) (detection time.Duration, elections []time.Duration, early int, ok bool) {
	if declared <= 0 || declared < kill {
		return 0, nil, 0, false
	}
	for _, o := range outages {
		switch {
		case !o.Recovered:
		case o.To >= declared:
			elections = append(elections, o.To-declared)
		default:
			early++
		}
	}
	return declared - kill, elections, early, true
}

// WindowGap is a channel's longest time without an acknowledgement within [from, to): the
// gaps between its acknowledgements, clipped to the window (a gap that began before from
// counts from from, one still open at to counts up to to). Taken over windows of the same
// length before and after a fault, it compares the channels the failed node did not lead
// with themselves.
func WindowGap(acks []time.Duration, from, to time.Duration) time.Duration {
	acks = slices.Clone(acks)
	slices.Sort(acks)
	longest, prev := time.Duration(0), from
	for _, t := range acks {
		if t <= from {
			continue
		}
		if t >= to {
			break
		}
		longest = max(longest, t-prev)
		prev = t
	}
	return max(longest, to-prev)
}
