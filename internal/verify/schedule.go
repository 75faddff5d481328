package verify

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Fault is a kind of fault the schedule injects.
type Fault string

const (
	// Kill is kill -9 of a process, restarted after the event's duration.
	Kill Fault = "kill"
	// Pause is SIGSTOP of a process for the event's duration, then SIGCONT: a zombie that
	// still believes what it believed.
	Pause Fault = "pause"
	// Wipe is kill -9 of a replica and the loss of its data directory (a replaced disk); it
	// restarts empty after the event's duration.
	Wipe Fault = "wipe"
)

// AllFaults are the fault kinds the suite knows.
var AllFaults = []Fault{Kill, Pause, Wipe}

// ParseFaults reads a comma-separated list of fault kinds ("all" for every one).
func ParseFaults(s string) ([]Fault, error) {
	if s == "" || s == "all" {
		return AllFaults, nil
	}
	var out []Fault
	for _, f := range strings.Split(s, ",") {
		f := Fault(strings.TrimSpace(f))
		if !slices.Contains(AllFaults, f) {
			return nil, fmt.Errorf("unknown fault %q (known: %v)", f, AllFaults)
		}
		out = append(out, f)
	}
	return out, nil
}

// Target is a process of the cluster: its tier ("arbiter", "channelctl", "replica",
// "gateway") and node id.
type Target struct {
	Tier string
	ID   uint64
}

func (t Target) String() string { return fmt.Sprintf("%s-%d", t.Tier, t.ID) }

// Event is one fault: Fault on Target from At, for For.
type Event struct {
	At     time.Duration
	For    time.Duration
	Fault  Fault
	Target Target
}

func (e Event) String() string {
	return fmt.Sprintf("%8v +%-6v %-5s %s", e.At.Round(time.Millisecond), e.For.Round(time.Millisecond), e.Fault, e.Target)
}

// Schedule draws a fault schedule from seed for a run of length d: in each tier one fault at
// a time (so a tier of three keeps a majority; a tier of one, the gateway, goes away
// entirely), the tiers overlapping each other, gaps of 1-3 s between a tier's faults and
// faults of 0.5-4 s. Wipes hit replicas only. The same arguments give the same schedule.
func Schedule(seed uint64, d time.Duration, faults []Fault, targets []Target) []Event {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	byTier := map[string][]Target{}
	var tiers []string
	for _, t := range targets {
		if _, ok := byTier[t.Tier]; !ok {
			tiers = append(tiers, t.Tier)
		}
		byTier[t.Tier] = append(byTier[t.Tier], t)
	}
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo))) }
	var out []Event
	for _, tier := range tiers {
		kinds := slices.DeleteFunc(slices.Clone(faults), func(f Fault) bool { return f == Wipe && tier != "replica" })
		if len(kinds) == 0 {
			continue
		}
		for at := between(time.Second, 3*time.Second); ; {
			e := Event{At: at, For: between(500*time.Millisecond, 4*time.Second),
				Fault: kinds[rng.IntN(len(kinds))], Target: byTier[tier][rng.IntN(len(byTier[tier]))]}
			if e.At+e.For > d {
				break
			}
			out = append(out, e)
			at = e.At + e.For + between(time.Second, 3*time.Second)
		}
	}
	slices.SortStableFunc(out, func(a, b Event) int { return int(a.At - b.At) })
	return out
}
