package replica

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/chanlog"
)

// appendSendAsync starts an AppendWithNonce and returns where its outcome arrives.
func appendSendAsync(ctx context.Context, e *Engine, nonce uint64, in []*triarchv1.MessageInput) <-chan appendCall {
	out := make(chan appendCall, 1)
	go func() {
		res, err := e.AppendWithNonce(ctx, "ch", nonce, in)
		out <- appendCall{res, err}
	}()
	return out
}

// Issue 13 item 7: a gateway that lost the answer to a send retries it with the send's nonce;
// finding its first attempt committed, the retry answers the original seq without Duplicate
// (the client sent the id once). Another send of the id (another nonce, or none) is a
// duplicate, and so is an id repeated within one send.
func TestRetryOfTheSameSendIsNotADuplicate(t *testing.T) {
	e, f := newCoalesceEngine(t)
	f.releaseAll(t, nil)
	const send, other = 0xfeed, 0xbeef

	first := await(t, appendSendAsync(context.Background(), e, send, msgs("a", "b")))
	require.NoError(t, first.err)
	require.Equal(t, []chanlog.Result{{Seq: 1}, {Seq: 2}}, first.res)
	// The gateway's retry of the same send (its first answer lost on the way).
	retry := await(t, appendSendAsync(context.Background(), e, send, msgs("a", "b")))
	require.NoError(t, retry.err)
	require.Equal(t, []chanlog.Result{{Seq: 1}, {Seq: 2}}, retry.res, "the same send: same seqs, not duplicates")
	// The client's own resend is a new send with a new nonce; a caller with no nonce is too.
	resend := await(t, appendSendAsync(context.Background(), e, other, msgs("a", "c")))
	require.NoError(t, resend.err)
	require.Equal(t, []chanlog.Result{{Seq: 1, Duplicate: true}, {Seq: 3}}, resend.res)
	plain := await(t, appendAsync(context.Background(), e, msgs("b")))
	require.NoError(t, plain.err)
	require.Equal(t, []chanlog.Result{{Seq: 2, Duplicate: true}}, plain.res)
	require.Equal(t, uint64(3), e.byID["ch"].log.LastSeq(), "no retry took a seq")

	// Every entry carries its messages' nonces; none when the send had none.
	entries := f.committed()
	require.Len(t, entries, 4)
	require.Equal(t, []uint64{send, send}, entries[0].GetNonces())
	require.Equal(t, []uint64{other, other}, entries[2].GetNonces())
	require.Empty(t, entries[3].GetNonces())

	// An id twice in one send is the client's duplicate, on the first attempt and on a retry.
	twice := await(t, appendSendAsync(context.Background(), e, 0xd0d0, msgs("d", "d", "e")))
	require.NoError(t, twice.err)
	require.Equal(t, []chanlog.Result{{Seq: 4}, {Seq: 4, Duplicate: true}, {Seq: 5}}, twice.res)
	twice = await(t, appendSendAsync(context.Background(), e, 0xd0d0, msgs("d", "d", "e")))
	require.NoError(t, twice.err)
	require.Equal(t, []chanlog.Result{{Seq: 4}, {Seq: 4, Duplicate: true}, {Seq: 5}}, twice.res)
}

// A retry coalesced into one entry with its own first attempt and another send of the same id:
// each request is told by its own nonce, wherever the messages sit in the entry.
func TestRetryCoalescedWithItsFirstAttempt(t *testing.T) {
	e, f := newCoalesceEngine(t)
	ch := e.byID["ch"]
	blockers, held := blockChannel(t, e, f)
	r1 := appendSendAsync(context.Background(), e, 7, msgs("x", "y"))
	waitFor(t, "r1 queued", func() bool { return ch.prop.queued() == 1 })
	r2 := appendSendAsync(context.Background(), e, 8, msgs("y"))
	waitFor(t, "r2 queued", func() bool { return ch.prop.queued() == 2 })
	r3 := appendSendAsync(context.Background(), e, 7, msgs("x", "y")) // r1's retry
	waitFor(t, "r3 queued", func() bool { return ch.prop.queued() == 3 })
	r4 := appendAsync(context.Background(), e, msgs("z"))
	waitFor(t, "r4 queued", func() bool { return ch.prop.queued() == 4 })
	held[0].release <- nil
	coalesced := f.waitEntered(t)
	require.Equal(t, []uint64{7, 7, 8, 7, 7, 0}, coalesced.batch.GetNonces())
	f.releaseAll(t, nil, coalesced)

	o1, o2, o3, o4 := await(t, r1), await(t, r2), await(t, r3), await(t, r4)
	require.NoError(t, errors.Join(await(t, blockers[0]).err, o1.err, o2.err, o3.err, o4.err))
	require.Equal(t, []chanlog.Result{{Seq: 2}, {Seq: 3}}, o1.res)
	require.Equal(t, []chanlog.Result{{Seq: 3, Duplicate: true}}, o2.res)
	require.Equal(t, []chanlog.Result{{Seq: 2}, {Seq: 3}}, o3.res)
	require.Equal(t, []chanlog.Result{{Seq: 4}}, o4.res)
}

// The nonce is in the entry, so the gateway's retry that reaches a new leader (the old one
// committed the first attempt and then lost its leadership) is answered alike there.
func TestRetryOfTheSameSendAtANewLeader(t *testing.T) {
	c := newCluster(t)
	c.load(c.spec("ch", 5))
	c.elect(1, "ch")
	req := &replicav1.AppendRequest{ChannelId: "ch", Messages: msgs("m1", "m2"), Nonce: 0x5eed}
	resp, err := c.data[0].Append(ctx(t), req)
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 2}, seqsOf(resp))

	c.elect(2, "ch")
	resp, err = c.data[1].Append(ctx(t), req)
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 2}, seqsOf(resp))
	for _, r := range resp.GetResults() {
		require.False(t, r.GetDuplicate(), "the gateway's retry of the send is not the client's duplicate")
	}
	resp, err = c.data[1].Append(ctx(t), &replicav1.AppendRequest{ChannelId: "ch", Messages: msgs("m2", "m3"), Nonce: 0x5eee})
	require.NoError(t, err)
	require.Equal(t, []uint64{2, 3}, seqsOf(resp))
	require.True(t, resp.GetResults()[0].GetDuplicate(), "another send of m2 is")
	require.False(t, resp.GetResults()[1].GetDuplicate())
	requireContiguous(t, readAll(t, c.data[1], "ch"), 3)
}

// The checksum trailer still comes last and covers the nonces (field 6, after crc32c's 5):
// a nonce changed on the way fails the check rather than making a retry a duplicate on one
// replica only.
func TestSealedBatchCoversNonces(t *testing.T) {
	data, err := sealBatch(&replicav1.LogBatch{Messages: msgs("a"), ProposerNodeId: 1, ProposalId: 1 << 60, Nonces: []uint64{0x0102030405060708}})
	require.NoError(t, err)
	require.NoError(t, checkBatch(data))
	var lb replicav1.LogBatch
	require.NoError(t, proto.Unmarshal(data, &lb))
	require.Equal(t, []uint64{0x0102030405060708}, lb.GetNonces())
	at := bytes.Index(data, []byte{8, 7, 6, 5, 4, 3, 2, 1})
	require.Positive(t, at)
	require.Less(t, at, len(data)-batchCRCLength, "the nonces precede the trailer")
	data[at] ^= 1
	require.ErrorIs(t, checkBatch(data), errChecksum)
}
