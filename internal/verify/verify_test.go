package verify

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func send(client int, call, ret int, ids []string, seqs ...uint64) Op {
	return Op{Client: client, Channel: "c", Kind: Send, Call: ms(call), Return: ms(ret), IDs: ids, Seqs: seqs, Known: seqs != nil}
}

func read(client int, call, ret int, from uint64, limit int, got ...string) Op {
	return Op{Client: client, Channel: "c", Kind: Read, Call: ms(call), Return: ms(ret), From: from, Limit: limit, Got: got}
}

func ids(s ...string) []string { return s }

// The checkers must accept what a correct log can do and reject each kind of anomaly; a
// checker that cannot fail would make the suite worthless.
func TestLinearizableAcceptsCorrectHistories(t *testing.T) {
	for name, h := range map[string][]Op{
		"sequential": {send(0, 0, 1, ids("a"), 1), send(0, 2, 3, ids("b", "c"), 2, 3), read(0, 4, 5, 1, 100, "a", "b", "c"),
			read(0, 6, 7, 2, 100, "b", "c"), read(0, 8, 9, 2, 1, "b")},
		"concurrent sends in either order":      {send(0, 0, 10, ids("a"), 2), send(1, 0, 10, ids("b"), 1), read(2, 11, 12, 1, 100, "b", "a")},
		"a read overlapping a send may miss it": {send(0, 0, 10, ids("a"), 1), read(1, 1, 2, 1, 100)},
		"an unknown send seen later":            {send(0, 0, 1, ids("a")), read(1, 5, 6, 1, 100, "a")},
		"an unknown send never seen":            {send(0, 0, 1, ids("a")), read(1, 5, 6, 1, 100), send(1, 7, 8, ids("b"), 1)},
	} {
		t.Run(name, func(t *testing.T) {
			if err := Linearizable(h, time.Second, ""); err != nil {
				t.Fatal(err)
			}
			if err := StaleReads(h); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestLinearizableRejectsAnomalies(t *testing.T) {
	for name, h := range map[string][]Op{
		"stale read":                 {send(0, 0, 1, ids("a"), 1), read(1, 2, 3, 1, 100)},
		"two messages at one seq":    {send(0, 0, 1, ids("a"), 1), send(1, 2, 3, ids("b"), 1)},
		"read of a message not sent": {send(0, 0, 1, ids("a"), 1), read(1, 2, 3, 1, 100, "a", "x")},
		"reordered read":             {send(0, 0, 1, ids("a"), 1), send(0, 2, 3, ids("b"), 2), read(1, 4, 5, 1, 100, "b", "a")},
		"read going backwards":       {send(0, 0, 1, ids("a")), read(1, 2, 3, 1, 100, "a"), read(1, 4, 5, 1, 100)},
		"a batch split by a read":    {send(0, 0, 10, ids("a", "b"), 1, 2), read(1, 2, 3, 1, 100, "a")},
	} {
		t.Run(name, func(t *testing.T) {
			if err := Linearizable(h, time.Second, t.TempDir()); !errors.Is(err, ErrNotLinearizable) {
				t.Fatalf("got %v, want ErrNotLinearizable", err)
			}
		})
	}
}

func TestStaleReadsNamesTheRead(t *testing.T) {
	h := []Op{send(0, 0, 1, ids("a"), 1), send(0, 2, 3, ids("b"), 2), read(1, 4, 5, 1, 100, "a")}
	if err := StaleReads(h); err == nil {
		t.Fatal("a read of 1 message after 2 were acknowledged passed")
	}
	// Cut short by its limit, it says nothing about the rest.
	if err := StaleReads([]Op{send(0, 0, 1, ids("a", "b"), 1, 2), read(1, 4, 5, 1, 1, "a")}); err != nil {
		t.Fatal(err)
	}
	// From the middle: nothing from seq 2 while 3 messages were acknowledged is stale (make
	// verify SEED=1 FAULTS=powerloss); from seq 4, nothing is the end of the log.
	three := send(0, 0, 1, ids("a", "b", "c"), 1, 2, 3)
	if err := StaleReads([]Op{three, read(1, 4, 5, 2, 100)}); err == nil {
		t.Fatal("an empty read from seq 2 after 3 messages were acknowledged passed")
	}
	if err := StaleReads([]Op{three, read(1, 4, 5, 2, 100, "b", "c"), read(1, 4, 5, 4, 100)}); err != nil {
		t.Fatal(err)
	}
}

func TestExactlyOnce(t *testing.T) {
	h := []Op{send(0, 0, 1, ids("a"), 1), send(0, 2, 3, ids("b"), 2), send(1, 2, 3, ids("u"))}
	ok := map[string][]Entry{"c": {{1, "a"}, {2, "b"}, {3, "u"}}}
	if err := ExactlyOnce(h, ok); err != nil {
		t.Fatal(err)
	}
	for name, final := range map[string][]Entry{
		"lost":       {{1, "a"}},
		"duplicated": {{1, "a"}, {2, "b"}, {3, "a"}},
		"moved":      {{1, "b"}, {2, "a"}},
		"gap":        {{1, "a"}, {3, "b"}},
		"never sent": {{1, "a"}, {2, "b"}, {3, "x"}},
	} {
		if err := ExactlyOnce(h, map[string][]Entry{"c": final}); err == nil {
			t.Errorf("%s: final log %v passed", name, final)
		}
	}
}

func TestScheduleIsSeededAndKeepsOneFaultPerTier(t *testing.T) {
	// Four replicas: a repair needs a spare.
	targets := []Target{{"arbiter", 1}, {"arbiter", 2}, {"arbiter", 3}, {"replica", 1}, {"replica", 2}, {"replica", 3}, {"replica", 4}, {"gateway", 1}}
	// Two minutes: the replica tier, which draws the most kinds, may not draw each in one.
	a := Schedule(7, 2*time.Minute, AllFaults, targets)
	b := Schedule(7, 2*time.Minute, AllFaults, targets)
	if len(a) == 0 || !slices.Equal(a, b) {
		t.Fatalf("schedules of one seed differ or are empty: %v / %v", a, b)
	}
	if c := Schedule(8, 2*time.Minute, AllFaults, targets); slices.Equal(a, c) {
		t.Fatal("another seed gave the same schedule")
	}
	kinds := map[Fault]bool{}
	for _, e := range a {
		if e.Fault.ReplicaOnly() && e.Target.Tier != "replica" {
			t.Fatalf("%v hits a process without a replica's store", e)
		}
		kinds[e.Fault] = true
	}
	requireOneFaultPerTier(t, a, 2*time.Minute)
	if len(kinds) != len(AllFaults) {
		t.Fatalf("two minutes of schedule used only %v", kinds)
	}
	only, err := ParseFaults("pause")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range Schedule(7, time.Minute, only, targets) {
		if e.Fault != Pause {
			t.Fatalf("%v in a pause-only schedule", e)
		}
	}
	if _, err := ParseFaults("pause,flood"); err == nil {
		t.Fatal("an unknown fault was accepted")
	}
}

// requireOneFaultPerTier checks the schedule's invariant: the events that count against a
// tier (a partition between two tiers counts against both) never overlap, and all end by d.
func requireOneFaultPerTier(t *testing.T, events []Event, d time.Duration) {
	t.Helper()
	end := map[string]time.Duration{}
	for _, e := range events {
		if e.For <= 0 || e.At+e.For > d {
			t.Fatalf("%v does not fit in %v", e, d)
		}
		for _, tier := range e.Tiers() {
			if e.At < end[tier] {
				t.Fatalf("%v overlaps the previous fault of tier %s (until %v)", e, tier, end[tier])
			}
			end[tier] = e.At + e.For
		}
	}
}

var allTargets = []Target{{"arbiter", 1}, {"arbiter", 2}, {"arbiter", 3}, {"channelctl", 101}, {"channelctl", 102},
	{"replica", 1}, {"replica", 2}, {"replica", 3}, {"gateway", 1}}

// oldSchedule is Schedule as it was before network faults, kept to show that the seeds run
// since then replay the same faults.
func oldSchedule(seed uint64, d time.Duration, faults []Fault, targets []Target) []Event {
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

func TestScheduleWithoutNetworkFaultsIsUnchanged(t *testing.T) {
	for _, kinds := range [][]Fault{{Kill, Pause, Wipe}, {Pause}, {Kill, Wipe}} {
		for seed := range uint64(6) {
			got, want := Schedule(seed, 2*time.Minute, kinds, allTargets), oldSchedule(seed, 2*time.Minute, kinds, allTargets)
			if len(want) == 0 || !slices.Equal(got, want) {
				t.Fatalf("seed %d, %v: schedule changed:\n%v\nwas\n%v", seed, kinds, got, want)
			}
		}
	}
}

// Network faults: drawn by seed, every shape and every netem mode drawn, within their
// ranges, the two-tier partitions holding both tiers, and the old kinds still drawn beside.
func TestNetworkSchedule(t *testing.T) {
	a := Schedule(3, 10*time.Minute, AllFaults, spareTargets)
	if !slices.Equal(a, Schedule(3, 10*time.Minute, AllFaults, spareTargets)) {
		t.Fatal("two schedules of one seed differ")
	}
	if slices.Equal(a, Schedule(4, 10*time.Minute, AllFaults, spareTargets)) {
		t.Fatal("another seed gave the same schedule")
	}
	for seed := range uint64(20) {
		requireOneFaultPerTier(t, Schedule(seed, 10*time.Minute, AllFaults, allTargets), 10*time.Minute)
		requireOneFaultPerTier(t, Schedule(seed, 10*time.Minute, AllFaults, spareTargets), 10*time.Minute)
		requireOneFaultPerTier(t, Schedule(seed, 10*time.Minute, []Fault{Partition}, allTargets), 10*time.Minute)
		requireOneFaultPerTier(t, Schedule(seed, 10*time.Minute, []Fault{Partition, Netem}, allTargets), 10*time.Minute)
	}
	kinds := map[Fault]int{}
	for _, e := range a {
		kinds[e.Fault]++
	}
	for _, f := range AllFaults {
		if kinds[f] == 0 {
			t.Fatalf("ten minutes of every fault drew no %s: %v", f, kinds)
		}
	}

	shapes := map[Shape]int{}
	netem := map[string]int{}
	for _, e := range append(Schedule(5, 10*time.Minute, []Fault{Partition, Netem}, allTargets), a...) {
		switch e.Fault {
		case Partition:
			shapes[e.Shape]++
			switch e.Shape {
			case FromArbiters:
				if e.Target.Tier != "replica" || e.Peer != (Target{}) {
					t.Fatalf("%v: not a replica alone", e)
				}
				if !slices.Equal(e.Tiers(), []string{"replica", "arbiter"}) {
					t.Fatalf("%v counts against %v", e, e.Tiers())
				}
			case GatewayReplica:
				if e.Target.Tier != "gateway" || e.Peer.Tier != "replica" {
					t.Fatalf("%v: not the gateway and a replica", e)
				}
				if !slices.Equal(e.Tiers(), []string{"gateway", "replica"}) {
					t.Fatalf("%v counts against %v", e, e.Tiers())
				}
			case Ring:
				if e.Target.Tier != "replica" || e.Peer.Tier != "replica" || e.Peer == e.Target {
					t.Fatalf("%v: not two replicas", e)
				}
			default:
				if e.Peer != (Target{}) || len(e.Tiers()) != 1 {
					t.Fatalf("%v: a one-process shape with a peer", e)
				}
			}
			if e.For < time.Second || e.For > 8*time.Second {
				t.Fatalf("%v: duration out of 1-8s", e)
			}
		case Netem:
			if e.Delay == 0 && e.Loss == 0 {
				t.Fatalf("%v degrades nothing", e)
			}
			if e.Delay != 0 && (e.Delay < 50*time.Millisecond || e.Delay > 300*time.Millisecond || e.Jitter > e.Delay/2) {
				t.Fatalf("%v: delay out of 50-300ms or jitter over half of it", e)
			}
			if e.Loss != 0 && (e.Loss < 0.05 || e.Loss > 0.30) {
				t.Fatalf("%v: loss out of 5-30%%", e)
			}
			netem[fmt.Sprint(e.Delay != 0, e.Loss != 0)]++
		}
	}
	for _, sh := range Shapes {
		if shapes[sh] == 0 {
			t.Fatalf("no %s partition drawn: %v", sh, shapes)
		}
	}
	if len(netem) != 3 {
		t.Fatalf("netem faults were not delay, loss and both: %v", netem)
	}

	// Without the tiers a shape needs, it is not drawn.
	for _, e := range Schedule(1, 10*time.Minute, []Fault{Partition}, []Target{{"replica", 1}, {"replica", 2}, {"gateway", 1}}) {
		if e.Shape == FromArbiters || e.Shape == Ring {
			t.Fatalf("%v drawn without arbiters or a third replica", e)
		}
	}
	only, err := ParseFaults("partition,netem")
	if err != nil || !slices.Equal(only, []Fault{Partition, Netem}) {
		t.Fatalf("ParseFaults: %v, %v", only, err)
	}
}

func TestUnavailabilityIsTheLongestGapAroundTheEvent(t *testing.T) {
	var h []Op
	for _, at := range []int{0, 100, 200, 1500, 1600, 5000, 5100} {
		h = append(h, send(0, at-1, at, ids("x"), 1))
	}
	e := Event{At: ms(250), For: ms(500), Fault: Kill, Target: Target{"replica", 1}}
	g := Unavailability(h, []Event{e}, ms(100))
	if g[0].Gap != ms(1300) {
		t.Fatalf("gap %v, want 1.3s (200ms to 1.5s)", g[0].Gap)
	}
	var b strings.Builder
	if err := WriteUnavailability(&b, g); err != nil || !strings.Contains(b.String(), "1.3s") {
		t.Fatalf("table %q, %v", b.String(), err)
	}
}
