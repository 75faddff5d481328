package verify

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"testing"
	"time"
)

// spareTargets are allTargets with a fourth replica: a spare for repairs.
var spareTargets = append(slices.Clone(allTargets), Target{"replica", 4})

// The seeds run before Repair and Powerloss existed replay the same faults: the schedules of
// the older kinds, network faults included, hash to what they hashed to then (recorded from
// the code before those kinds were added).
func TestScheduleOfTheOlderKindsIsUnchanged(t *testing.T) {
	for _, c := range []struct {
		kinds []Fault
		want  string
	}{
		{[]Fault{Kill, Pause, Wipe, Partition, Netem}, "506a3fb643424057b0426e0667fad2c07ea2e95ee130958e0d923d70a4447a45"},
		{[]Fault{Partition, Netem}, "c39451353d8887433e41307331071fb1b7fee271bd075d297ca378ee8787170c"},
		{[]Fault{Kill, Partition}, "4bfe4087dbe04154d49f299da3a41df888a30b65b4988d18dc60021aebc1f7c6"},
	} {
		h := sha256.New()
		for seed := range uint64(6) {
			for _, e := range Schedule(seed, 2*time.Minute, c.kinds, allTargets) {
				fmt.Fprintf(h, "%d %d %s %s %d %s %s %d %d %g\n", e.At, e.For, e.Fault, e.Target, e.Target.ID, e.Shape, e.Peer, e.Delay, e.Jitter, e.Loss)
			}
		}
		if got := fmt.Sprintf("%x", h.Sum(nil)); got != c.want {
			t.Errorf("%v: schedules changed (hash %s, was %s)", c.kinds, got, c.want)
		}
	}
}

// Repairs need a spare replica, last long enough for the control tier to act (10-16 s), and
// hit replicas only; power losses hit replicas only and sometimes all of them at once.
func TestScheduleOfRepairsAndPowerLosses(t *testing.T) {
	for _, kinds := range [][]Fault{{Repair}, {Kill, Repair}, {Repair, Partition}} {
		if got := Schedule(1, 10*time.Minute, kinds, allTargets); slices.ContainsFunc(got, func(e Event) bool { return e.Fault == Repair }) {
			t.Fatalf("%v: a repair drawn with three replicas (no spare): %v", kinds, got)
		}
	}
	count := map[string]int{}
	for seed := range uint64(10) {
		for _, kinds := range [][]Fault{{Repair, Powerloss}, {Kill, Repair, Powerloss, Partition}} {
			s := Schedule(seed, 5*time.Minute, kinds, spareTargets)
			requireOneFaultPerTier(t, s, 5*time.Minute)
			for _, e := range s {
				count[e.Label()]++
				switch e.Fault {
				case Repair:
					if e.Target.Tier != "replica" || e.For < 10*time.Second || e.For > 16*time.Second {
						t.Fatalf("%v: not a replica down for 10-16 s", e)
					}
				case Powerloss:
					if e.Target.Tier != "replica" || e.For < 500*time.Millisecond || e.For > 4*time.Second {
						t.Fatalf("%v: not a replica down for 0.5-4 s", e)
					}
				}
				if e.All && e.Fault != Powerloss {
					t.Fatalf("%v: only a power loss hits every replica", e)
				}
			}
		}
	}
	for _, l := range []string{"repair", "powerloss", "powerloss:all"} {
		if count[l] == 0 {
			t.Fatalf("no %s drawn: %v", l, count)
		}
	}
	if _, err := ParseFaults("kill,repair,powerloss"); err != nil {
		t.Fatal(err)
	}
}
