package verify

import (
	"errors"
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
	targets := []Target{{"arbiter", 1}, {"arbiter", 2}, {"arbiter", 3}, {"replica", 1}, {"replica", 2}, {"replica", 3}, {"gateway", 1}}
	a := Schedule(7, time.Minute, AllFaults, targets)
	b := Schedule(7, time.Minute, AllFaults, targets)
	if len(a) == 0 || !slices.Equal(a, b) {
		t.Fatalf("schedules of one seed differ or are empty: %v / %v", a, b)
	}
	if c := Schedule(8, time.Minute, AllFaults, targets); slices.Equal(a, c) {
		t.Fatal("another seed gave the same schedule")
	}
	end := map[string]time.Duration{}
	kinds := map[Fault]bool{}
	for _, e := range a {
		if e.At < end[e.Target.Tier] {
			t.Fatalf("%v overlaps the previous fault of its tier", e)
		}
		end[e.Target.Tier] = e.At + e.For
		if e.At+e.For > time.Minute {
			t.Fatalf("%v runs past the end", e)
		}
		if e.Fault == Wipe && e.Target.Tier != "replica" {
			t.Fatalf("%v wipes a process without a replica's store", e)
		}
		kinds[e.Fault] = true
	}
	if len(kinds) != len(AllFaults) {
		t.Fatalf("a minute of schedule used only %v", kinds)
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
