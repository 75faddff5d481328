package bench

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const ms1 = time.Millisecond

func offsets(msecs ...int) []time.Duration {
	out := make([]time.Duration, len(msecs))
	for i, m := range msecs {
		out[i] = time.Duration(m) * ms1
	}
	return out
}

// The gap that spans the kill is found, and a longer one before the kill (warm-up) is not
// charged to the failover.
func TestLongestGapSpanningTheKill(t *testing.T) {
	acks := offsets(0, 900, 950, 1000, 1050, 2400, 2450, 2500) // 900 ms pause in the warm-up
	o := LongestGap(acks, 1100*ms1, 3000*ms1)
	require.True(t, o.Recovered)
	require.Equal(t, 1350*ms1, o.Gap)
	require.Equal(t, 1050*ms1, o.From)
	require.Equal(t, 2400*ms1, o.To)
}

// An ack that slipped through just after the kill does not hide the outage that follows.
func TestLongestGapAfterAnInFlightAck(t *testing.T) {
	acks := offsets(2500, 1000, 1120, 1050) // unsorted on purpose
	o := LongestGap(acks, 1100*ms1, 3000*ms1)
	require.Equal(t, Outage{Gap: 1380 * ms1, From: 1120 * ms1, To: 2500 * ms1, Recovered: true}, o)
}

// A channel that never acked after the kill is unrecovered; its gap runs to the end.
func TestLongestGapUnrecovered(t *testing.T) {
	o := LongestGap(offsets(100, 200), 500*ms1, 3000*ms1)
	require.False(t, o.Recovered)
	require.Equal(t, 2800*ms1, o.Gap)
	o = LongestGap(nil, 500*ms1, 3000*ms1)
	require.False(t, o.Recovered)
	require.Equal(t, 2500*ms1, o.Gap, "no ack at all: from the kill to the end")
}

// A channel whose first ack came after the kill is charged from the kill, not from 0.
func TestLongestGapFirstAckAfterKill(t *testing.T) {
	o := LongestGap(offsets(1800, 1850), 1000*ms1, 3000*ms1)
	require.Equal(t, Outage{Gap: 800 * ms1, From: 1000 * ms1, To: 1800 * ms1, Recovered: true}, o)
}

// An ack at exactly the kill instant counts as before it: the long gap that it closes is
// warm-up, not failover.
func TestLongestGapAckAtTheKill(t *testing.T) {
	o := LongestGap(offsets(0, 1000, 1100), 1000*ms1, 2000*ms1)
	require.Equal(t, Outage{Gap: 100 * ms1, From: 1000 * ms1, To: 1100 * ms1, Recovered: true}, o)
}

func TestSplitDetectionAndElection(t *testing.T) {
	kill, declared := 1000*ms1, 1750*ms1
	outs := []Outage{
		{Gap: 1100 * ms1, From: 950 * ms1, To: 2050 * ms1, Recovered: true}, // election 300 ms
		{Gap: 1500 * ms1, From: 990 * ms1, To: 2490 * ms1, Recovered: true}, // election 740 ms
		{Gap: 200 * ms1, From: 980 * ms1, To: 1180 * ms1, Recovered: true},  // moved before the declaration
		{Gap: 2000 * ms1, From: 1000 * ms1, To: 3000 * ms1},                 // never recovered
	}
	detection, elections, early, ok := Split(outs, kill, declared)
	require.True(t, ok)
	require.Equal(t, 750*ms1, detection)
	require.Equal(t, []time.Duration{300 * ms1, 740 * ms1}, elections)
	require.Equal(t, 1, early)
	require.Equal(t, []time.Duration{1050 * ms1, 1490 * ms1, 180 * ms1}, Recoveries(outs, kill))

	_, elections, _, ok = Split(outs, kill, 0)
	require.False(t, ok, "never seen dead: nothing to split")
	require.Nil(t, elections)
}

func TestAckTimesRecordsOffsets(t *testing.T) {
	start := time.Unix(100, 0)
	a := NewAckTimes(start)
	a.Record("c", start.Add(5*ms1))
	a.Record("c", start.Add(7*ms1))
	require.Equal(t, offsets(5, 7), a.Of("c"))
	require.Empty(t, a.Of("other"))
}

func TestWindowGapClipsToTheWindow(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	acks := ms(0, 500, 520, 600, 610, 1510)
	// In [400, 1000): 400->500 (100, clipped), 500->520, 520->600, 600->610, 610->1000 (390,
	// clipped: the gap to 1510 is still open at the window's end).
	require.Equal(t, 390*time.Millisecond, WindowGap(acks, 400*time.Millisecond, time.Second))
	require.Equal(t, 80*time.Millisecond, WindowGap(acks, 450*time.Millisecond, 605*time.Millisecond))
	require.Equal(t, time.Second, WindowGap(nil, 0, time.Second), "no ack: the whole window")
}
