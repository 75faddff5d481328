package bench

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func acked(n int) []Ack {
	out := make([]Ack, n)
	for i := range out {
		out[i] = Ack{ClientMsgID: string(rune('a' + i)), Seq: uint64(i + 1)}
	}
	return out
}

func delivered(acks []Ack) []Delivery {
	out := make([]Delivery, len(acks))
	for i, a := range acks {
		out[i] = Delivery{Seq: a.Seq, ClientMsgID: a.ClientMsgID}
	}
	return out
}

func TestDeliveryCheckPassesAnIntactStream(t *testing.T) {
	var d DeliveryCheck
	a := acked(5)
	d.Add("c", 0, a, delivered(a))
	// An unacknowledged but committed message (seq 6) is allowed.
	d.Add("c", 1, a, append(delivered(a), Delivery{Seq: 6, ClientMsgID: "unacked"}))
	d.Finish()
	require.True(t, d.OK, d.Examples)
	require.Equal(t, 2, d.Subscribers)
	require.Equal(t, int64(10), d.Expected)
	require.Equal(t, int64(11), d.Received)
}

func TestDeliveryCheckCatchesAMissingMessage(t *testing.T) {
	var d DeliveryCheck
	a := acked(5)
	got := delivered(a)
	d.Add("c", 3, a, append(got[:2:2], got[3:]...)) // seq 3 never arrives
	d.Finish()
	require.False(t, d.OK)
	require.Equal(t, int64(1), d.Missing)
	require.Equal(t, int64(1), d.Skipped)
	require.Contains(t, d.Examples[0], "subscriber 3")
}

func TestDeliveryCheckCatchesALostTail(t *testing.T) {
	var d DeliveryCheck
	a := acked(5)
	d.Add("c", 0, a, delivered(a)[:3])
	d.Finish()
	require.False(t, d.OK)
	require.Equal(t, int64(2), d.Missing)
}

func TestDeliveryCheckCatchesADuplicate(t *testing.T) {
	var d DeliveryCheck
	a := acked(4)
	got := delivered(a)
	got = append(got[:3:3], got[2], got[3]) // seq 3 twice
	d.Add("c", 0, a, got)
	d.Finish()
	require.False(t, d.OK)
	require.Equal(t, int64(1), d.Duplicated)
	require.Equal(t, int64(1), d.OutOfOrder)
}

func TestDeliveryCheckCatchesReordering(t *testing.T) {
	var d DeliveryCheck
	a := acked(4)
	got := delivered(a)
	got[1], got[2] = got[2], got[1]
	d.Add("c", 0, a, got)
	d.Finish()
	require.False(t, d.OK)
	require.Equal(t, int64(1), d.OutOfOrder)
	require.Zero(t, d.Missing)
	require.Zero(t, d.Duplicated)
}

func TestDeliveryCheckCatchesAMisplacedMessage(t *testing.T) {
	var d DeliveryCheck
	a := acked(3)
	got := delivered(a)
	got[1].ClientMsgID, got[2].ClientMsgID = got[2].ClientMsgID, got[1].ClientMsgID
	d.Add("c", 0, a, got)
	d.Finish()
	require.False(t, d.OK)
	require.Equal(t, int64(2), d.Misplaced)
}
