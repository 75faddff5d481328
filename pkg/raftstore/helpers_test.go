package raftstore

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

const noLimit = math.MaxUint64

// ent builds an entry whose data names its group, index and term, so that reading an entry
// from the wrong place cannot go unnoticed.
func ent(group, index, term uint64) *raftpb.Entry {
	return &raftpb.Entry{
		Index: proto.Uint64(index),
		Term:  proto.Uint64(term),
		Type:  raftpb.EntryType_EntryNormal.Enum(),
		Data:  []byte(fmt.Sprintf("g%d/i%d/t%d", group, index, term)),
	}
}

// ents builds entries [from, to] of one term.
func ents(group, from, to, term uint64) []*raftpb.Entry {
	var out []*raftpb.Entry
	for i := from; i <= to; i++ {
		out = append(out, ent(group, i, term))
	}
	return out
}

func hs(term, vote, commit uint64) *raftpb.HardState {
	return &raftpb.HardState{Term: proto.Uint64(term), Vote: proto.Uint64(vote), Commit: proto.Uint64(commit)}
}

func snapshot(index, term uint64, voters []uint64, data string) *raftpb.Snapshot {
	return &raftpb.Snapshot{
		Metadata: &raftpb.SnapshotMetadata{
			Index:     proto.Uint64(index),
			Term:      proto.Uint64(term),
			ConfState: &raftpb.ConfState{Voters: voters},
		},
		Data: []byte(data),
	}
}

func save(t *testing.T, s Store, us ...Update) {
	t.Helper()
	require.NoError(t, s.Save(us))
}

func open(t *testing.T, s Store, group uint64) Log {
	t.Helper()
	l, err := s.Open(group)
	require.NoError(t, err)
	return l
}

// span describes expected entries [from, to] of one term.
type span struct{ from, to, term uint64 }

// expectLog checks a group's log exactly: bounds, every entry through Entries and Term, the
// term before the first index, and the errors just outside.
func expectLog(t *testing.T, s Store, group, first, prevTerm uint64, spans ...span) {
	t.Helper()
	l := open(t, s, group)
	last := first - 1
	var want []*raftpb.Entry
	for _, sp := range spans {
		require.Equal(t, last+1, sp.from, "test bug: spans must be contiguous")
		want = append(want, ents(group, sp.from, sp.to, sp.term)...)
		last = sp.to
	}
	fi, err := l.FirstIndex()
	require.NoError(t, err)
	require.Equal(t, first, fi, "first index")
	li, err := l.LastIndex()
	require.NoError(t, err)
	require.Equal(t, last, li, "last index")

	term, err := l.Term(first - 1)
	require.NoError(t, err)
	require.Equal(t, prevTerm, term, "term of first-1")
	if first > 1 {
		_, err = l.Term(first - 2)
		require.ErrorIs(t, err, raft.ErrCompacted)
		_, err = l.Entries(first-1, last+1, noLimit)
		require.ErrorIs(t, err, raft.ErrCompacted)
	}
	_, err = l.Term(last + 1)
	require.ErrorIs(t, err, raft.ErrUnavailable)

	if len(want) == 0 {
		_, err = l.Entries(first, first, noLimit)
		require.ErrorIs(t, err, raft.ErrUnavailable)
		return
	}
	got, err := l.Entries(first, last+1, noLimit)
	require.NoError(t, err)
	requireEntries(t, want, got)
	for _, e := range want {
		term, err := l.Term(e.GetIndex())
		require.NoError(t, err)
		require.Equal(t, e.GetTerm(), term, "term of %d", e.GetIndex())
	}
	// A range in the middle, and one entry.
	if len(want) > 2 {
		got, err = l.Entries(first+1, last, noLimit)
		require.NoError(t, err)
		requireEntries(t, want[1:len(want)-1], got)
	}
	got, err = l.Entries(last, last+1, 0)
	require.NoError(t, err)
	requireEntries(t, want[len(want)-1:], got)
}

func requireEntries(t *testing.T, want, got []*raftpb.Entry) {
	t.Helper()
	require.Equal(t, len(want), len(got), "entry count: want %s got %s", fmtEntries(want), fmtEntries(got))
	for i := range want {
		require.True(t, proto.Equal(want[i], got[i]), "entry %d: want %v got %v", i, want[i], got[i])
	}
}

func fmtEntries(es []*raftpb.Entry) string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.FormatUint(e.GetIndex(), 10) + "t" + strconv.FormatUint(e.GetTerm(), 10))
	}
	return "[" + b.String() + "]"
}

func expectHardState(t *testing.T, s Store, group, term, vote, commit uint64) {
	t.Helper()
	hs, cs, err := open(t, s, group).InitialState()
	require.NoError(t, err)
	require.NotNil(t, cs)
	require.Equal(t, term, hs.GetTerm(), "term")
	require.Equal(t, vote, hs.GetVote(), "vote")
	require.Equal(t, commit, hs.GetCommit(), "commit")
}
