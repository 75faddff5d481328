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
	// Partition drops packets between processes for the event's duration (no reset, no
	// error: they vanish), in one of the shapes of Shape.
	Partition Fault = "partition"
	// Netem delays and drops a share of the packets on every link of a process, both ways.
	Netem Fault = "netem"
	// Repair is kill -9 of a replica kept dead long enough (10-16 s) for the control tier to
	// give its channels a new replica on a spare node (the runner shortens the channelctls'
	// --replace-dead-after), while clients send; then it restarts. It needs a spare: more
	// replicas than a channel has (MinRepairReplicas).
	Repair Fault = "repair"
	// Powerloss is kill -9 of a replica whose data directory is on a lossy filesystem, then a
	// power cut of that filesystem (every write not fsynced is lost), then a restart after the
	// event's duration. An event with All cuts every replica's power at once.
	Powerloss Fault = "powerloss"
)

// AllFaults are the fault kinds the suite knows.
var AllFaults = []Fault{Kill, Pause, Wipe, Partition, Netem, Repair, Powerloss}

// MinRepairReplicas is the smallest replica tier a Repair fault is drawn for: a channel has
// three replicas, so a fourth node must be there to take a dead one's place.
const MinRepairReplicas = 4

// ReplicaOnly reports whether the fault hits a replica's store or replica set, so that only
// the replica tier draws it.
func (f Fault) ReplicaOnly() bool { return f == Wipe || f == Repair || f == Powerloss }

// drawable reports whether tier may draw fault f, given the tiers there are.
func drawable(f Fault, tier string, byTier map[string][]Target) bool {
	switch {
	case f.ReplicaOnly() && tier != "replica":
		return false
	case f == Repair:
		return len(byTier["replica"]) >= MinRepairReplicas
	}
	return true
}

// drawExtras draws what a fault kind of its own needs beyond the common fields (nothing for
// the kinds older than Repair, so that their schedules draw exactly what they drew before).
func drawExtras(e *Event, rng *rand.Rand, between func(lo, hi time.Duration) time.Duration) {
	switch e.Fault {
	case Repair:
		e.For = between(10*time.Second, 16*time.Second)
	case Powerloss:
		e.All = rng.IntN(4) == 0
	}
}

// Network reports whether the fault is one of the network's (it needs the cluster's processes
// in network namespaces).
func (f Fault) Network() bool { return f == Partition || f == Netem }

// Shape is the form of a partition.
type Shape string

const (
	// Isolate cuts the target from every other process, both ways.
	Isolate Shape = "isolate"
	// CutOut drops everything the target sends to the other processes; what they send
	// arrives (a TCP connection stalls both ways all the same: its acknowledgements are lost).
	CutOut Shape = "cut-out"
	// CutIn drops everything the other processes send to the target.
	CutIn Shape = "cut-in"
	// FromArbiters cuts a replica from every arbiter, both ways; it still reaches its peers,
	// the channelctls and the gateway. It counts against the arbiter tier too.
	FromArbiters Shape = "from-arbiters"
	// GatewayReplica cuts the gateway (Target) from one replica (Peer), both ways. It counts
	// against both tiers.
	GatewayReplica Shape = "gateway-replica"
	// Ring cuts two replicas (Target and Peer) from each other, both ways, the third still
	// reaching both: each replica sees a different majority ({T,3rd}, {P,3rd}, all three), the
	// majority ring of three.
	Ring Shape = "ring"
)

// Shapes are every partition shape, in the order a tier draws from.
var Shapes = []Shape{Isolate, CutOut, CutIn, FromArbiters, GatewayReplica, Ring}

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

// Event is one fault: Fault on Target from At, for For. A partition has a Shape and, for
// the shapes between two processes, a Peer; a netem fault has its Delay, Jitter and Loss.
type Event struct {
	At     time.Duration
	For    time.Duration
	Fault  Fault
	Target Target

	Shape  Shape
	Peer   Target
	Delay  time.Duration
	Jitter time.Duration
	Loss   float64
	// All, for a power loss, cuts every replica's power at once (Target is then one of them,
	// drawn as for any event, and stands for the tier).
	All bool
}

func (e Event) String() string {
	s := fmt.Sprintf("%8v +%-6v %-9s %s", e.At.Round(time.Millisecond), e.For.Round(time.Millisecond), e.Fault, e.Target)
	switch e.Fault {
	case Partition:
		s += " " + string(e.Shape)
		if e.Peer != (Target{}) {
			s += " " + e.Peer.String()
		}
	case Netem:
		if e.Delay > 0 {
			s += fmt.Sprintf(" delay %v±%v", e.Delay, e.Jitter)
		}
		if e.Loss > 0 {
			s += fmt.Sprintf(" loss %.0f%%", e.Loss*100)
		}
	case Powerloss:
		if e.All {
			s += " and every other replica"
		}
	}
	return s
}

// Label is the event's kind for tables: its fault, and a partition's shape.
func (e Event) Label() string {
	if e.Fault == Partition {
		return string(e.Fault) + ":" + string(e.Shape)
	}
	if e.Fault == Powerloss && e.All {
		return string(e.Fault) + ":all"
	}
	return string(e.Fault)
}

// Tiers are the tiers the event counts against: its target's and, for a partition between
// tiers, the other one's.
func (e Event) Tiers() []string {
	out := []string{e.Target.Tier}
	if e.Fault == Partition {
		other := e.Peer.Tier
		if e.Shape == FromArbiters {
			other = "arbiter"
		}
		if other != "" && other != e.Target.Tier {
			out = append(out, other)
		}
	}
	return out
}

// Schedule draws a fault schedule from seed for a run of length d: in each tier one fault at
// a time (so a tier of three keeps a majority; a tier of one, the gateway, goes away
// entirely), the tiers overlapping each other, gaps of 1-3 s between a tier's faults and
// faults of 0.5-4 s. Wipes, repairs (10-16 s, with a spare replica only) and power losses hit
// replicas only; one power loss in four cuts every replica's power at once. The same
// arguments give the same schedule, and a schedule of the kinds older than Repair is the one
// drawn before Repair existed.
//
// With network faults among the kinds, a partition that involves two tiers (a replica cut
// from the arbiters, the gateway from a replica) holds both: it waits until both are free,
// and neither has another fault until it ends. Partitions and netem faults last 1-8 s; a
// netem fault delays the process's packets 50-300 ms (jitter up to half of that), loses
// 5-30 % of them, or both. Without network faults the schedule is the one this function drew
// before they existed, so old seeds replay as they did.
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
	if !slices.ContainsFunc(faults, Fault.Network) {
		var out []Event
		for _, tier := range tiers {
			kinds := slices.DeleteFunc(slices.Clone(faults), func(f Fault) bool { return !drawable(f, tier, byTier) })
			if len(kinds) == 0 {
				continue
			}
			for at := between(time.Second, 3*time.Second); ; {
				e := Event{At: at, For: between(500*time.Millisecond, 4*time.Second),
					Fault: kinds[rng.IntN(len(kinds))], Target: byTier[tier][rng.IntN(len(byTier[tier]))]}
				drawExtras(&e, rng, between)
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

	// Each tier is free from free[tier] on; the tier free first draws its next fault, until
	// a fault drawn no longer fits in d (then that tier is done).
	free := map[string]time.Duration{}
	done := map[string]bool{}
	var out []Event
	for _, tier := range tiers {
		free[tier] = between(time.Second, 3*time.Second)
	}
	for {
		tier := ""
		for _, t := range tiers {
			if !done[t] && (tier == "" || free[t] < free[tier]) {
				tier = t
			}
		}
		if tier == "" {
			break
		}
		kinds := slices.DeleteFunc(slices.Clone(faults), func(f Fault) bool {
			return !drawable(f, tier, byTier) || (f == Partition && len(shapes(tier, byTier)) == 0)
		})
		if len(kinds) == 0 {
			done[tier] = true
			continue
		}
		e := Event{Fault: kinds[rng.IntN(len(kinds))], Target: byTier[tier][rng.IntN(len(byTier[tier]))]}
		switch e.Fault {
		case Kill, Pause, Wipe, Repair, Powerloss:
			e.For = between(500*time.Millisecond, 4*time.Second)
			drawExtras(&e, rng, between)
		case Partition:
			e.For = between(time.Second, 8*time.Second)
			sh := shapes(tier, byTier)
			e.Shape = sh[rng.IntN(len(sh))]
			switch e.Shape {
			case GatewayReplica:
				e.Peer = byTier["replica"][rng.IntN(len(byTier["replica"]))]
			case Ring:
				others := slices.DeleteFunc(slices.Clone(byTier["replica"]), func(t Target) bool { return t == e.Target })
				e.Peer = others[rng.IntN(len(others))]
			}
		case Netem:
			e.For = between(time.Second, 8*time.Second)
			switch rng.IntN(3) {
			case 0:
				e.Delay = between(50*time.Millisecond, 300*time.Millisecond).Round(time.Millisecond)
				e.Jitter = time.Duration(rng.Int64N(int64(e.Delay / 2))).Round(time.Millisecond)
			case 1:
				e.Loss = float64(5+rng.IntN(26)) / 100
			default:
				e.Delay = between(50*time.Millisecond, 300*time.Millisecond).Round(time.Millisecond)
				e.Jitter = time.Duration(rng.Int64N(int64(e.Delay / 2))).Round(time.Millisecond)
				e.Loss = float64(5+rng.IntN(26)) / 100
			}
		}
		held := e.Tiers()
		for _, t := range held {
			e.At = max(e.At, free[t])
		}
		if e.At+e.For > d {
			done[tier] = true
			continue
		}
		out = append(out, e)
		for _, t := range held {
			free[t] = e.At + e.For + between(time.Second, 3*time.Second)
		}
	}
	slices.SortStableFunc(out, func(a, b Event) int { return int(a.At - b.At) })
	return out
}

// shapes are the partition shapes a tier's process can be the target of, given the tiers
// there are: a two-tier shape needs the other tier; the ring needs three replicas.
func shapes(tier string, byTier map[string][]Target) []Shape {
	out := []Shape{Isolate, CutOut, CutIn}
	if len(byTier) < 2 && len(byTier[tier]) < 2 {
		return nil // nobody to be cut from
	}
	switch tier {
	case "replica":
		if len(byTier["arbiter"]) > 0 {
			out = append(out, FromArbiters)
		}
		if len(byTier["replica"]) >= 3 {
			out = append(out, Ring)
		}
	case "gateway":
		if len(byTier["replica"]) > 0 {
			out = append(out, GatewayReplica)
		}
	}
	return out
}
