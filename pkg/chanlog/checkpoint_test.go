package chanlog

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

// store holds a channel's checkpoint records as the replica's state store does: the header and
// the DedupChunk records by first counter, all encoded.
type store struct {
	header []byte
	chunks map[uint64][]byte
}

func newStore() *store { return &store{chunks: map[uint64][]byte{}} }

// save applies the writes of a checkpoint in the order the replica writes them; with keep >= 0
// only the first keep writes land, as after a crash in the middle of a SaveState.
func (s *store) save(t testing.TB, cp Checkpoint, keep int) {
	n := 0
	land := func() bool { n++; return keep < 0 || n <= keep }
	for _, c := range cp.Chunks {
		if !land() {
			return
		}
		v, err := proto.Marshal(c.Data)
		require.NoError(t, err)
		s.chunks[c.Start] = v
	}
	if !land() {
		return
	}
	v, err := proto.Marshal(cp.Header)
	require.NoError(t, err)
	s.header = v
	for _, d := range cp.Deleted {
		if !land() {
			return
		}
		delete(s.chunks, d)
	}
}

func (s *store) restore(t testing.TB, cfg Config) *Channel {
	if s.header == nil {
		return New(cfg)
	}
	var h replicav1.ChannelCheckpoint
	require.NoError(t, proto.Unmarshal(s.header, &h))
	c, err := Restore(cfg, &h, s.chunks)
	require.NoError(t, err)
	return c
}

type state struct {
	applied, lastSeq uint64
	clock            int64
	oldest           uint64
	ids              []remembered
}

func stateOf(c *Channel) state {
	st := state{applied: c.applied, lastSeq: c.lastSeq, clock: c.clock, oldest: c.ids.oldest}
	for i := range c.ids.n {
		st.ids = append(st.ids, *c.ids.at(i))
	}
	return st
}

// requireSameState checks the dedup state, and that every id is found through the table.
func requireSameState(t testing.TB, want, got *Channel) {
	t.Helper()
	require.Equal(t, stateOf(want), stateOf(got))
	for _, r := range stateOf(got).ids {
		found, ok := got.ids.lookup(r.h)
		require.True(t, ok)
		require.Equal(t, r, found)
	}
}

// history is a random channel log: ids drawn from a pool small enough that retries (and
// retries after expiry) are common, some messages without ids, and propose times that mostly
// advance but now and then jump back (a leader whose clock is behind) or ahead.
func history(t testing.TB, rng *rand.Rand, entries int) [][]byte {
	out := make([][]byte, entries)
	at := t0
	for i := range out {
		switch r := rng.IntN(100); {
		case r < 5:
			at = at.Add(-time.Duration(rng.IntN(120)) * time.Second)
		case r < 8:
			at = at.Add(time.Duration(rng.IntN(90)) * time.Second)
		default:
			at = at.Add(time.Duration(rng.IntN(300)) * time.Millisecond)
		}
		lb := &replicav1.LogBatch{ProposeTime: timestamppb.New(at)}
		for range 1 + rng.IntN(4) {
			k := rng.IntN(6000)
			id := fmt.Sprintf("id-%d", k)
			if rng.IntN(20) == 0 {
				id = ""
			}
			lb.Messages = append(lb.Messages, &triarchv1.MessageInput{ClientMsgId: id})
			// Most sends come with a nonce, some without; a repeat of an id is now and then
			// the same send again (its nonce follows from the id), usually another.
			var nonce uint64
			switch r := rng.IntN(10); {
			case r < 3:
				nonce = uint64(k) + 1
			case r < 9:
				nonce = rng.Uint64() | 1
			}
			lb.Nonces = append(lb.Nonces, nonce)
		}
		if rng.IntN(10) == 0 {
			lb.Nonces = nil // an entry of sends without nonces
		}
		data, err := proto.Marshal(lb)
		require.NoError(t, err)
		out[i] = data
	}
	return out
}

// TestRestoreMatchesUninterrupted runs a replica that never restarts beside one that
// checkpoints at random points, sometimes crashes in the middle of writing a checkpoint (only a
// prefix of its writes lands), restores from what is stored and re-applies from there: both
// must make the same decisions and end in the same state.
func TestRestoreMatchesUninterrupted(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 1))
			// Half the runs are bounded by age, half by count.
			cfg := Config{Window: time.Minute, MaxIDs: 3000}
			if seed%2 == 1 {
				cfg.Window = time.Hour
			}
			ents := history(t, rng, 12_000)
			live, other := New(cfg), New(cfg)
			st := newStore()
			var want []Applied
			maxRecords := 0
			for i, e := range ents {
				a, err := live.Apply(uint64(i+1), e)
				require.NoError(t, err)
				want = append(want, a)
				// The restarted replica lags, then catches up (re-applying what it had).
				for other.AppliedIndex() < uint64(i+1) {
					k := other.AppliedIndex()
					got, err := other.Apply(k+1, ents[k])
					require.NoError(t, err)
					require.Equal(t, want[k], got, "entry %d", k+1)
				}
				switch r := rng.IntN(1000); {
				case r < 8:
					st.save(t, other.Checkpoint(), -1)
				case r < 10:
					cp := other.Checkpoint()
					keep := rng.IntN(len(cp.Chunks) + 1 + len(cp.Deleted) + 1)
					st.save(t, cp, keep)
					other = st.restore(t, cfg)
				case r < 12:
					other = st.restore(t, cfg)
				}
				maxRecords = max(maxRecords, len(st.chunks))
			}
			requireSameState(t, live, other)
			// Leftovers of interrupted checkpoints go with the next one.
			st.save(t, other.Checkpoint(), -1)
			var h replicav1.ChannelCheckpoint
			require.NoError(t, proto.Unmarshal(st.header, &h))
			require.ElementsMatch(t, h.GetDedupChunks(), keys(st.chunks))
			require.LessOrEqual(t, maxRecords, cfg.MaxIDs/chunkIDs+4)
		})
	}
}

func keys(m map[uint64][]byte) []uint64 {
	var out []uint64
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestCheckpointWritesOnlyWhatChanged(t *testing.T) {
	cfg := Config{Window: time.Hour, MaxIDs: 10_000}
	c := New(cfg)
	index := uint64(0)
	apply := func(n int, at time.Time) {
		for range n {
			index++
			_, err := c.Apply(index, batch(t, at, fmt.Sprintf("m%d", index)))
			require.NoError(t, err)
		}
	}
	ids := func(cp Checkpoint) (n int) {
		for _, ch := range cp.Chunks {
			n += len(ch.Data.GetSeqs())
		}
		return n
	}
	apply(1500, t0)
	cp := c.Checkpoint()
	require.Equal(t, 1500, ids(cp))
	require.Equal(t, []uint64{0}, cp.Header.GetDedupChunks())
	// A record of 1,500 ids is not grown: the next checkpoint writes the new ids only.
	apply(1000, t0)
	cp = c.Checkpoint()
	require.Equal(t, 1000, ids(cp))
	require.Equal(t, []uint64{0, 1500}, cp.Header.GetDedupChunks())
	// Small checkpoints (an unload, a close) grow the newest record while it holds fewer than
	// chunkIDs, rather than adding many small ones.
	apply(3, t0)
	cp = c.Checkpoint()
	require.Equal(t, []Chunk{{Start: 1500, Data: c.ids.encode(1500, 2503)}}, cp.Chunks)
	apply(2, t0)
	cp = c.Checkpoint()
	require.Equal(t, 1005, ids(cp))
	require.Equal(t, []uint64{0, 1500}, cp.Header.GetDedupChunks())
	require.Empty(t, c.Checkpoint().Chunks, "nothing changed")
	// Once the window has passed, whole records are deleted.
	apply(1, t0.Add(2*time.Hour))
	cp = c.Checkpoint()
	require.Equal(t, []uint64{0, 1500}, cp.Deleted)
	require.Equal(t, []uint64{2505}, cp.Header.GetDedupChunks())
	require.Equal(t, 1, ids(cp))
}

func TestRestoreFormat0(t *testing.T) {
	cfg := Config{Window: time.Minute, MaxIDs: 3}
	old := &replicav1.ChannelCheckpoint{AppliedIndex: 9, LastSeq: 5, Dedup: []*replicav1.DedupEntry{
		{ClientMsgId: "a", Seq: 1, UnixNano: t0.UnixNano()},
		{ClientMsgId: "b", Seq: 2, UnixNano: t0.Add(time.Second).UnixNano()},
		// A leader whose clock was behind: the dedup clock keeps it at b's time.
		{ClientMsgId: "c", Seq: 4, UnixNano: t0.Add(-time.Second).UnixNano()},
	}}
	c, err := Restore(cfg, old, nil)
	require.NoError(t, err)
	for id, want := range map[string]uint64{"a": 1, "b": 2, "c": 4} {
		seq, ok := c.Lookup(id)
		require.True(t, ok)
		require.Equal(t, want, seq)
	}
	require.Equal(t, t0.Add(time.Second).UnixNano(), c.clock)
	require.Equal(t, t0.Add(time.Second).UnixNano(), c.ids.at(2).at)
	// The first checkpoint after the migration writes every id.
	st := newStore()
	st.save(t, c.Checkpoint(), -1)
	requireSameState(t, c, st.restore(t, cfg))
	// Format 0 kept no nonces: any repeat is a duplicate, whatever nonce it comes with.
	a, err := c.Apply(10, sent(t, t0.Add(30*time.Second), []uint64{1, 1}, "b", "d"))
	require.NoError(t, err)
	require.Equal(t, []Result{{Seq: 2, Duplicate: true}, {Seq: 6}}, a.Results)
}

// TestNoncesSurviveCheckpoints: a restored channel knows which send took each id, so a retry
// of that send after a restart (or on a replica that restored from a checkpoint) is still
// not a duplicate, and another send still is. Records hold nonces only when an id has one.
func TestNoncesSurviveCheckpoints(t *testing.T) {
	cfg := Config{Window: time.Hour, MaxIDs: 100}
	c := New(cfg)
	_, err := c.Apply(1, batch(t, t0, "plain-1", "plain-2"))
	require.NoError(t, err)
	st := newStore()
	cp := c.Checkpoint()
	require.Len(t, cp.Chunks, 1)
	require.Empty(t, cp.Chunks[0].Data.GetNonces(), "ids without nonces: the record holds none")
	st.save(t, cp, -1)

	_, err = c.Apply(2, sent(t, t0, []uint64{0, 11, 12}, "plain-3", "x", "y"))
	require.NoError(t, err)
	cp = c.Checkpoint()
	require.Len(t, cp.Chunks, 1)
	require.Equal(t, uint64(0), cp.Chunks[0].Start, "the small record grew")
	require.Equal(t, []uint64{0, 0, 0, 11, 12}, cp.Chunks[0].Data.GetNonces())
	st.save(t, cp, -1)

	r := st.restore(t, cfg)
	requireSameState(t, c, r)
	a, err := r.Apply(3, sent(t, t0, []uint64{11, 13, 12, 12}, "x", "y", "y", "plain-1"))
	require.NoError(t, err)
	require.Equal(t, []Result{{Seq: 4}, {Seq: 5, Duplicate: true}, {Seq: 5}, {Seq: 1, Duplicate: true}}, a.Results)
}

// TestRestoreRecordsWithoutNonces: records written before nonces existed restore with nonce 0
// for every id, so every repeat is a duplicate, as it was when they were written.
func TestRestoreRecordsWithoutNonces(t *testing.T) {
	cfg := Config{Window: time.Hour, MaxIDs: 100}
	c := New(cfg)
	_, err := c.Apply(1, batch(t, t0, "a", "b"))
	require.NoError(t, err)
	cp := c.Checkpoint()
	st := newStore()
	st.save(t, cp, -1)
	// What a replica of the previous version wrote for the same ids: field 4 unknown to it.
	old, err := proto.Marshal(&replicav1.DedupChunk{Hashes: cp.Chunks[0].Data.GetHashes(),
		Seqs: cp.Chunks[0].Data.GetSeqs(), Times: cp.Chunks[0].Data.GetTimes()})
	require.NoError(t, err)
	require.Equal(t, old, st.chunks[0], "the record is what the previous version wrote")
	r := st.restore(t, cfg)
	requireSameState(t, c, r)
	a, err := r.Apply(2, sent(t, t0, []uint64{5, 0}, "a", "b"))
	require.NoError(t, err)
	require.Equal(t, []Result{{Seq: 1, Duplicate: true}, {Seq: 2, Duplicate: true}}, a.Results)

	// A record whose nonces do not match its ids is refused.
	bad, err := proto.Marshal(&replicav1.DedupChunk{Hashes: cp.Chunks[0].Data.GetHashes(),
		Seqs: cp.Chunks[0].Data.GetSeqs(), Times: cp.Chunks[0].Data.GetTimes(), Nonces: []uint64{1}})
	require.NoError(t, err)
	_, err = Restore(cfg, cp.Header, map[uint64][]byte{0: bad})
	require.ErrorIs(t, err, ErrBadCheckpoint)
	require.ErrorContains(t, err, "1 nonces")
}

func TestRestoreRefusesUnknownFormat(t *testing.T) {
	_, err := Restore(Config{}, &replicav1.ChannelCheckpoint{Format: Format + 1}, nil)
	require.ErrorIs(t, err, ErrBadCheckpoint)
	require.ErrorContains(t, err, "newer than this replica reads")
}

func TestRestoreRefusesMissingChunk(t *testing.T) {
	c := New(Config{Window: time.Hour, MaxIDs: 100})
	_, err := c.Apply(1, batch(t, t0, "a"))
	require.NoError(t, err)
	cp := c.Checkpoint()
	_, err = Restore(Config{Window: time.Hour, MaxIDs: 100}, cp.Header, nil)
	require.ErrorIs(t, err, ErrBadCheckpoint)
	require.ErrorContains(t, err, "missing")
}

// TestDedupClockOnlyMovesForward: a leader whose clock is behind neither moves the clock back
// nor stamps ids with its own time (which would make them expire before older ones).
func TestDedupClockOnlyMovesForward(t *testing.T) {
	c := New(Config{Window: time.Minute, MaxIDs: 100})
	_, err := c.Apply(1, batch(t, t0.Add(time.Minute), "a"))
	require.NoError(t, err)
	// The next leader is 50 s behind.
	_, err = c.Apply(2, batch(t, t0.Add(10*time.Second), "b"))
	require.NoError(t, err)
	require.Equal(t, t0.Add(time.Minute).UnixNano(), c.clock)
	// 55 s after b by the slow clock, a minute and 5 s after it by its own stamp: b is
	// remembered with the clock's time, so it is still in the window.
	a, err := c.Apply(3, batch(t, t0.Add(65*time.Second), "b", "a"))
	require.NoError(t, err)
	require.Equal(t, []Result{{Seq: 2, Duplicate: true}, {Seq: 1, Duplicate: true}}, a.Results)
	a, err = c.Apply(4, batch(t, t0.Add(2*time.Minute+time.Nanosecond), "b"))
	require.NoError(t, err)
	require.Equal(t, []Result{{Seq: 3}}, a.Results, "past the window by the dedup clock")
}

// TestDedupClockFarAhead documents what a leader whose clock is far ahead does: its first entry
// moves the dedup clock forward, which forgets every id remembered before it (unavoidable: the
// log says that much time has passed), and ids remembered after it carry that time, so they
// are not forgotten by age until the leaders' clocks catch up; the count bound still holds.
func TestDedupClockFarAhead(t *testing.T) {
	c := New(Config{Window: time.Minute, MaxIDs: 3})
	_, err := c.Apply(1, batch(t, t0, "a"))
	require.NoError(t, err)
	_, err = c.Apply(2, batch(t, t0.Add(10*time.Hour), "b"))
	require.NoError(t, err)
	_, ok := c.Lookup("a")
	require.False(t, ok)
	// Leaders with a correct clock again, for five hours.
	for i, id := range []string{"c", "d"} {
		_, err = c.Apply(uint64(3+i), batch(t, t0.Add(time.Duration(i+1)*time.Hour), id))
		require.NoError(t, err)
	}
	a, err := c.Apply(5, batch(t, t0.Add(5*time.Hour), "b", "c", "d"))
	require.NoError(t, err)
	require.Equal(t, []Result{{Seq: 2, Duplicate: true}, {Seq: 3, Duplicate: true}, {Seq: 4, Duplicate: true}}, a.Results)
	_, err = c.Apply(6, batch(t, t0.Add(5*time.Hour), "e"))
	require.NoError(t, err)
	_, ok = c.Lookup("b")
	require.False(t, ok, "evicted by count")
	_, err = c.Apply(7, batch(t, t0.Add(10*time.Hour+time.Minute+time.Nanosecond)))
	require.NoError(t, err)
	require.Zero(t, c.ids.n, "forgotten once the clocks pass the far one's time by the window")
}

// TestWindowMemoryBound checks the bound the package documents: at most MaxIDs ring slots and
// a table of at most 4*MaxIDs slots, and memory given back when the window empties by age.
func TestWindowMemoryBound(t *testing.T) {
	cfg := Config{Window: time.Minute, MaxIDs: 1000}
	c := New(cfg)
	for i := range 5000 {
		_, err := c.Apply(uint64(i+1), batch(t, t0, fmt.Sprint(i)))
		require.NoError(t, err)
		require.LessOrEqual(t, len(c.ids.ring), cfg.MaxIDs)
		require.LessOrEqual(t, len(c.ids.table), 4*cfg.MaxIDs)
	}
	require.Equal(t, cfg.MaxIDs, c.ids.n)
	_, err := c.Apply(5001, batch(t, t0.Add(time.Hour), "x"))
	require.NoError(t, err)
	require.Equal(t, minRing, len(c.ids.ring))
}

func FuzzRestore(f *testing.F) {
	c := New(Config{Window: time.Hour, MaxIDs: 10})
	for i := range 12 {
		_, _ = c.Apply(uint64(i+1), func() []byte {
			d, _ := proto.Marshal(&replicav1.LogBatch{ProposeTime: timestamppb.New(t0.Add(time.Duration(i) * time.Second)),
				Messages: []*triarchv1.MessageInput{{ClientMsgId: fmt.Sprint(i)}, {ClientMsgId: fmt.Sprint(i % 3)}},
				Nonces:   []uint64{uint64(i % 2), uint64(i)}})
			return d
		}())
	}
	cp := c.Checkpoint()
	h, _ := proto.Marshal(cp.Header)
	ch, _ := proto.Marshal(cp.Chunks[0].Data)
	f.Add(h, ch, cp.Chunks[0].Start)
	v0, _ := proto.Marshal(&replicav1.ChannelCheckpoint{LastSeq: 3, Dedup: []*replicav1.DedupEntry{{ClientMsgId: "a", Seq: 2}}})
	f.Add(v0, []byte{}, uint64(0))
	f.Fuzz(func(t *testing.T, header, chunk []byte, start uint64) {
		cfg := Config{Window: time.Hour, MaxIDs: 10}
		var h replicav1.ChannelCheckpoint
		if proto.Unmarshal(header, &h) != nil {
			return
		}
		c, err := Restore(cfg, &h, map[uint64][]byte{start: chunk})
		if err != nil {
			return
		}
		// Whatever was taken checkpoints (writing what changed) and restores to the same state.
		st := &store{header: header, chunks: map[uint64][]byte{start: chunk}}
		st.save(t, c.Checkpoint(), -1)
		requireSameState(t, c, st.restore(t, cfg))
	})
}
