package chanlog

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// batch encodes a LogBatch of messages with the given client ids, proposed at t.
func batch(t *testing.T, at time.Time, ids ...string) []byte {
	t.Helper()
	return sent(t, at, nil, ids...)
}

// sent encodes a LogBatch of messages with the given client ids and nonces (nonces[i] for
// message i, as the replica writes them), proposed at t.
func sent(t *testing.T, at time.Time, nonces []uint64, ids ...string) []byte {
	t.Helper()
	b := &replicav1.LogBatch{ProposeTime: timestamppb.New(at), ProposerNodeId: 2, ProposalId: 77, Nonces: nonces}
	for _, id := range ids {
		b.Messages = append(b.Messages, &triarchv1.MessageInput{ClientMsgId: id, Sender: "s", Payload: []byte("p-" + id)})
	}
	data, err := proto.Marshal(b)
	require.NoError(t, err)
	return data
}

func seqs(rs []Result) []uint64 {
	out := make([]uint64, len(rs))
	for i, r := range rs {
		out[i] = r.Seq
	}
	return out
}

func TestSequenceNumbersAreContiguousAndSkipNonDataEntries(t *testing.T) {
	c := New(Config{Window: time.Hour, MaxIDs: 100})
	c.Skip(1) // the new leader's empty entry
	a, err := c.Apply(2, batch(t, t0, "a", "b", "c"))
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 2, 3}, seqs(a.Results))
	require.Equal(t, uint64(1), a.FirstSeq)
	require.Equal(t, &replicav1.SeqIndexRecord{Index: 2, Count: 3}, a.Record)
	require.Equal(t, uint64(2), a.ProposerNodeID)
	require.Equal(t, uint64(77), a.ProposalID)
	c.Skip(3) // a configuration change
	a, err = c.Apply(4, batch(t, t0, "d"))
	require.NoError(t, err)
	require.Equal(t, []uint64{4}, seqs(a.Results))
	require.Equal(t, uint64(4), c.LastSeq())
	require.Equal(t, uint64(4), c.AppliedIndex())
}

func TestDuplicatesReturnTheOriginalSeqAndTakeNone(t *testing.T) {
	c := New(Config{Window: time.Hour, MaxIDs: 100})
	_, err := c.Apply(1, batch(t, t0, "a", "b"))
	require.NoError(t, err)
	a, err := c.Apply(2, batch(t, t0, "c", "a", "c", "d"))
	require.NoError(t, err)
	require.Equal(t, []Result{{Seq: 3}, {Seq: 1, Duplicate: true}, {Seq: 3, Duplicate: true}, {Seq: 4}}, a.Results)
	require.Equal(t, uint32(2), a.Record.GetCount())
	require.Equal(t, []uint32{1, 2}, a.Record.GetDuplicatePositions())

	msgs, err := Messages("ch", a.FirstSeq, a.Record, batch(t, t0, "c", "a", "c", "d"), 1, 10)
	require.NoError(t, err)
	require.Len(t, msgs, 2)
	require.Equal(t, uint64(3), msgs[0].GetSeq())
	require.Equal(t, "c", msgs[0].GetClientMsgId())
	require.Equal(t, uint64(4), msgs[1].GetSeq())
	require.Equal(t, "d", msgs[1].GetClientMsgId())
	require.Equal(t, "ch", msgs[1].GetChannelId())
	require.Equal(t, []byte("p-d"), msgs[1].GetPayload())
	require.True(t, msgs[1].GetCommitTime().AsTime().Equal(t0))

	// An entry made only of duplicates takes no sequence number, so no read can land on it and
	// it needs no index record.
	a, err = c.Apply(3, batch(t, t0, "a"))
	require.NoError(t, err)
	require.Nil(t, a.Record)
	require.Equal(t, []Result{{Seq: 1, Duplicate: true}}, a.Results)
	require.Equal(t, uint64(4), c.LastSeq())
}

// TestRetryOfTheSameSendIsNotADuplicate: a message whose id was taken by a message of the same
// send (same non-zero nonce: the gateway retried after losing the answer) gets the original seq
// and is not Duplicate; another send's message with the id (another nonce, or none) is.
func TestRetryOfTheSameSendIsNotADuplicate(t *testing.T) {
	c := New(Config{Window: time.Hour, MaxIDs: 100})
	a, err := c.Apply(1, sent(t, t0, []uint64{7, 7, 0}, "a", "b", "c"))
	require.NoError(t, err)
	require.Equal(t, []Result{{Seq: 1}, {Seq: 2}, {Seq: 3}}, a.Results)

	// The gateway's retry of the first send (same nonce 7), coalesced after a new send (9).
	a, err = c.Apply(2, sent(t, t0, []uint64{9, 7, 7}, "d", "a", "b"))
	require.NoError(t, err)
	require.Equal(t, []Result{{Seq: 4}, {Seq: 1}, {Seq: 2}}, a.Results, "the same send: not duplicates")
	require.Equal(t, &replicav1.SeqIndexRecord{Index: 2, Count: 1, DuplicatePositions: []uint32{1, 2}}, a.Record,
		"the retry took no seq all the same")
	require.Equal(t, uint64(4), c.LastSeq())

	// The client's own resend is another send: another nonce, or none.
	a, err = c.Apply(3, sent(t, t0, []uint64{8, 0, 9}, "a", "b", "d"))
	require.NoError(t, err)
	require.Equal(t, []Result{{Seq: 1, Duplicate: true}, {Seq: 2, Duplicate: true}, {Seq: 4}}, a.Results)
	// An id taken with no nonce is a duplicate for everyone, nonce 0 included.
	a, err = c.Apply(4, sent(t, t0, []uint64{0, 5}, "c", "c"))
	require.NoError(t, err)
	require.Equal(t, []Result{{Seq: 3, Duplicate: true}, {Seq: 3, Duplicate: true}}, a.Results)
	require.Nil(t, a.Record)
	require.Equal(t, uint64(4), c.LastSeq())

	// Nonces missing at the end of the entry count as 0.
	a, err = c.Apply(5, sent(t, t0, []uint64{7}, "a", "a"))
	require.NoError(t, err)
	require.Equal(t, []Result{{Seq: 1}, {Seq: 1, Duplicate: true}}, a.Results)
}

func TestMessagesRange(t *testing.T) {
	data := batch(t, t0, "a", "b", "c", "d", "e")
	rec := &replicav1.SeqIndexRecord{Index: 9, Count: 5}
	msgs, err := Messages("ch", 10, rec, data, 12, 2)
	require.NoError(t, err)
	require.Len(t, msgs, 2)
	require.Equal(t, uint64(12), msgs[0].GetSeq())
	require.Equal(t, "c", msgs[0].GetClientMsgId())
	require.Equal(t, uint64(13), msgs[1].GetSeq())

	// A record that disagrees with the entry is corruption, reported, not papered over.
	_, err = Messages("ch", 10, &replicav1.SeqIndexRecord{Index: 9, Count: 4}, data, 10, 10)
	require.ErrorContains(t, err, "took 5 sequence numbers, index says 4")
}

func TestReapplyAfterRestoreIsIdempotent(t *testing.T) {
	cfg := Config{Window: time.Hour, MaxIDs: 3}
	live := New(cfg)
	entries := [][]byte{}
	for i := range 6 {
		entries = append(entries, batch(t, t0.Add(time.Duration(i)*time.Second), fmt.Sprintf("m%d", i), fmt.Sprintf("n%d", i)))
	}
	st := newStore()
	var want []Applied
	for i, e := range entries {
		a, err := live.Apply(uint64(i+1), e)
		require.NoError(t, err)
		want = append(want, a)
		if i == 2 {
			st.save(t, live.Checkpoint(), -1)
		}
	}
	restored := st.restore(t, cfg)
	require.Equal(t, uint64(3), restored.AppliedIndex())
	// Raft re-delivers from the start after a crash; entries up to the checkpoint are ignored.
	for i, e := range entries {
		a, err := restored.Apply(uint64(i+1), e)
		require.NoError(t, err)
		if i < 3 {
			require.Equal(t, Applied{}, a)
			continue
		}
		require.Equal(t, want[i], a)
	}
	requireSameState(t, live, restored)
}

func TestDedupWindowByCountAndTime(t *testing.T) {
	c := New(Config{Window: time.Minute, MaxIDs: 2})
	_, err := c.Apply(1, batch(t, t0, "a", "b", "c"))
	require.NoError(t, err)
	_, ok := c.Lookup("a")
	require.False(t, ok, "a is the oldest of 3 with MaxIDs 2")
	s, ok := c.Lookup("c")
	require.True(t, ok)
	require.Equal(t, uint64(3), s)

	// Past the window, an id is new again and takes a fresh number.
	a, err := c.Apply(2, batch(t, t0.Add(2*time.Minute), "c"))
	require.NoError(t, err)
	require.Equal(t, []Result{{Seq: 4}}, a.Results)
	_, ok = c.Lookup("b")
	require.False(t, ok)
	s, _ = c.Lookup("c")
	require.Equal(t, uint64(4), s)
	require.Equal(t, 1, c.ids.n)
}

func TestBadEntryIsSkipped(t *testing.T) {
	c := New(Config{Window: time.Hour, MaxIDs: 10})
	_, err := c.Apply(1, []byte{0xff, 0xff, 0xff})
	require.ErrorIs(t, err, ErrBadEntry)
	require.Equal(t, uint64(1), c.AppliedIndex())
	a, err := c.Apply(2, batch(t, t0, "x"))
	require.NoError(t, err)
	require.Equal(t, []uint64{1}, seqs(a.Results))
}

func FuzzApplyAndMessages(f *testing.F) {
	good, _ := proto.Marshal(&replicav1.LogBatch{Messages: []*triarchv1.MessageInput{{ClientMsgId: "a", Payload: []byte("x")}}})
	f.Add(good)
	withNonces, _ := proto.Marshal(&replicav1.LogBatch{Messages: []*triarchv1.MessageInput{{ClientMsgId: "a"}, {ClientMsgId: "a"}, {ClientMsgId: "b"}},
		Nonces: []uint64{3, 3, 1 << 63}})
	f.Add(withNonces)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x02, 0x0a})
	f.Fuzz(func(t *testing.T, data []byte) {
		c := New(Config{Window: time.Hour, MaxIDs: 10})
		a, err := c.Apply(1, data)
		if err != nil {
			return
		}
		if a.Record == nil {
			return
		}
		msgs, err := Messages("ch", a.FirstSeq, a.Record, data, 1, 1000)
		require.NoError(t, err)
		require.Len(t, msgs, int(a.Record.GetCount()))
	})
}
