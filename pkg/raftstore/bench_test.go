package raftstore

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// BenchmarkBadgerSave measures one append-stage round: every group appends entries and moves
// its commit index, all in one Save (one fsync). "msg" entries carry one 128-byte message,
// "batch" entries 100 of them (12.8 KB).
//
//	go test -run x -bench BadgerSave -benchtime=3s -count 3 ./pkg/raftstore/
func BenchmarkBadgerSave(b *testing.B) {
	for _, kind := range []struct {
		name      string
		payload   int
		perGroup  int // entries per group per Save
		groupList []int
	}{
		{"msg128B", 128, 1, []int{1, 100, 1000}},
		{"msg128Bx16", 128, 16, []int{1, 100, 1000}},
		{"batch12.8KB", 12800, 1, []int{1, 100, 1000}},
	} {
		for _, groups := range kind.groupList {
			b.Run(fmt.Sprintf("%s/groups=%d", kind.name, groups), func(b *testing.B) {
				benchSave(b, groups, kind.perGroup, kind.payload)
			})
		}
	}
}

func benchSave(b *testing.B, groups, perGroup, payload int) {
	s, err := OpenBadger(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data := make([]byte, payload)
	for i := range data {
		data[i] = byte('a' + rand.IntN(26)) // text-like, compresses like chat does
	}
	next := make([]uint64, groups) // next index per group
	for g := range next {
		next[g] = 1
	}
	updates := make([]Update, groups)
	build := func() {
		for g := range updates {
			es := make([]*raftpb.Entry, perGroup)
			for k := range es {
				es[k] = &raftpb.Entry{Index: proto.Uint64(next[g]), Term: proto.Uint64(1), Data: data}
				next[g]++
			}
			updates[g] = Update{GroupID: uint64(g + 1), Entries: es, HardState: hs(1, 1, next[g]-1)}
		}
	}
	b.SetBytes(int64(groups * perGroup * payload))
	b.ReportAllocs()
	saves := 0
	for b.Loop() {
		b.StopTimer()
		build()
		b.StartTimer()
		if err := s.Save(updates); err != nil {
			b.Fatal(err)
		}
		saves++
	}
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(saves*groups*perGroup)/sec, "entries/s")
	b.ReportMetric(float64(saves)/sec, "fsyncs/s")
}
