package bench

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/triarch-io/triarch/pkg/client"
)

// memLog is channels held in memory, read in pages like the gateway's.
type memLog map[string][]client.Message

func (m memLog) Read(_ context.Context, ch string, from uint64, limit int) (*client.ReadResult, error) {
	msgs := m[ch]
	var last uint64
	if len(msgs) > 0 {
		last = msgs[len(msgs)-1].Seq
	}
	res := &client.ReadResult{LastSeq: last, NextSeq: from}
	for _, msg := range msgs {
		if msg.Seq >= from && len(res.Messages) < limit {
			res.Messages = append(res.Messages, msg)
			res.NextSeq = msg.Seq + 1
		}
	}
	return res, nil
}

// fill appends n messages to ch and acks them in the ledger.
func (m memLog) fill(l *Ledger, ch string, n int) {
	for range n {
		seq := uint64(len(m[ch]) + 1)
		id := fmt.Sprintf("%s-%d", ch, seq)
		m[ch] = append(m[ch], client.Message{Channel: ch, Seq: seq, ClientMsgID: id})
		l.Record(ch, Ack{ClientMsgID: id, Seq: seq})
	}
}

func setup() (memLog, *Ledger) {
	log, l := memLog{}, NewLedger([]string{"a", "b"})
	log.fill(l, "a", 2500) // three pages
	log.fill(l, "b", 10)
	log.fill(NewLedger(nil), "c", 5) // untracked
	return log, l
}

func TestVerifyPassesOnAnIntactLog(t *testing.T) {
	log, l := setup()
	v, err := Verify(context.Background(), log, l)
	require.NoError(t, err)
	require.True(t, v.OK, "%+v", v)
	require.Equal(t, 2, v.Channels)
	require.Equal(t, int64(2510), v.Acked)
	require.Equal(t, int64(2510), v.Read)
	require.Empty(t, v.Examples)
}

// A message lost after its ack (its slot taken by another) is caught.
func TestVerifyCatchesAPlantedLoss(t *testing.T) {
	log, l := setup()
	log["a"][1700].ClientMsgID = "someone-else"
	v, err := Verify(context.Background(), log, l)
	require.NoError(t, err)
	require.False(t, v.OK)
	require.Equal(t, int64(1), v.Missing)
	require.Contains(t, v.Examples[0], "a-1701")
}

// A tail message lost (the log shorter than the acks) is caught too.
func TestVerifyCatchesALostTail(t *testing.T) {
	log, l := setup()
	log["b"] = log["b"][:7]
	v, err := Verify(context.Background(), log, l)
	require.NoError(t, err)
	require.False(t, v.OK)
	require.Equal(t, int64(3), v.Missing)
}

// A message appended twice is caught, as is a hole in the seqs.
func TestVerifyCatchesAPlantedDuplicateAndAGap(t *testing.T) {
	log, l := setup()
	dup := log["b"][3]
	dup.Seq = 11
	log["b"] = append(log["b"], dup)
	v, err := Verify(context.Background(), log, l)
	require.NoError(t, err)
	require.False(t, v.OK)
	require.Equal(t, int64(1), v.Duplicated)
	require.Zero(t, v.Missing)

	log, l = setup()
	log["a"] = append(log["a"][:10], log["a"][11:]...)
	v, err = Verify(context.Background(), log, l)
	require.NoError(t, err)
	require.False(t, v.OK)
	require.Equal(t, int64(1), v.Gaps)
	require.Equal(t, int64(1), v.Missing)
}

// An ack whose message sits at another seq is caught.
func TestVerifyCatchesAMisplacedMessage(t *testing.T) {
	log, l := setup()
	log["a"][4].ClientMsgID, log["a"][5].ClientMsgID = log["a"][5].ClientMsgID, log["a"][4].ClientMsgID
	v, err := Verify(context.Background(), log, l)
	require.NoError(t, err)
	require.False(t, v.OK)
	require.Equal(t, int64(2), v.Misplaced)
}
