package replica

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/api"
)

func headersOf(n int) map[string]string {
	h := make(map[string]string, n)
	for i := range n {
		h[fmt.Sprintf("h%02d", i)] = "v"
	}
	return h
}

// A replica enforces the sender and header limits itself (pkg/api, the gateway's numbers), so
// that an append that did not come through a gateway is bounded the same way: at the limit is
// accepted and stored as sent, one over is InvalidArgument and nothing of the append is stored.
func TestSenderAndHeaderLimits(t *testing.T) {
	c := newCluster(t)
	c.load(c.spec("ch", 1))
	c.elect(1, "ch")

	cases := []struct {
		name    string
		sender  string
		headers map[string]string
		want    string // empty: accepted
	}{
		{name: "sender at the limit", sender: strings.Repeat("s", api.MaxSenderLen)},
		{name: "sender one over", sender: strings.Repeat("s", api.MaxSenderLen+1), want: "sender is 257 bytes long; at most 256"},
		{name: "headers at the count limit", headers: headersOf(api.MaxHeaders)},
		{name: "one header over the count", headers: headersOf(api.MaxHeaders + 1), want: "33 headers; at most 32"},
		{name: "header key at the limit", headers: map[string]string{strings.Repeat("k", api.MaxHeaderKeyLen): "v"}},
		{name: "header key one over", headers: map[string]string{strings.Repeat("k", api.MaxHeaderKeyLen+1): "v"}, want: "129 bytes long; at most 128"},
		{name: "header bytes at the limit", headers: map[string]string{"k1": strings.Repeat("a", 8191), "k2": strings.Repeat("b", 8189)}},
		{name: "header bytes one over", headers: map[string]string{"k1": strings.Repeat("a", 8191), "k2": strings.Repeat("b", 8190)}, want: "16385 bytes (keys and values); at most 16384"},
	}
	var stored []*triarchv1.MessageInput
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := []*triarchv1.MessageInput{
				{ClientMsgId: "ok/" + tc.name, Payload: []byte("first, within every limit")},
				{ClientMsgId: tc.name, Sender: tc.sender, Headers: tc.headers, Payload: []byte("p")},
			}
			_, err := c.data[0].Append(ctx(t), &replicav1.AppendRequest{ChannelId: "ch", Messages: in})
			if tc.want == "" {
				require.NoError(t, err)
				stored = append(stored, in...)
				return
			}
			st := status.Convert(err)
			require.Equal(t, codes.InvalidArgument, st.Code(), err)
			require.Contains(t, st.Message(), "messages[1]")
			require.Contains(t, st.Message(), tc.want)
			require.Empty(t, st.Details(), "a field limit is not TOO_LARGE")
		})
	}
	got := readAll(t, c.data[0], "ch")
	requireContiguous(t, got, len(stored))
	for i, m := range got {
		require.Equal(t, stored[i].GetClientMsgId(), m.GetClientMsgId())
		require.Equal(t, stored[i].GetSender(), m.GetSender())
		require.Equal(t, stored[i].GetHeaders(), m.GetHeaders())
	}
}

func TestValidateBatchLimits(t *testing.T) {
	// validateBatch alone, as every append path calls it before proposing.
	_, err := validateBatch([]*triarchv1.MessageInput{{Sender: strings.Repeat("s", api.MaxSenderLen)}})
	require.NoError(t, err)
	_, err = validateBatch([]*triarchv1.MessageInput{{}, {Sender: strings.Repeat("s", api.MaxSenderLen+1)}})
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "messages[1].sender")
	_, err = validateBatch([]*triarchv1.MessageInput{{Headers: headersOf(api.MaxHeaders + 1)}})
	require.ErrorIs(t, err, ErrInvalid)
	_, err = validateBatch([]*triarchv1.MessageInput{{ClientMsgId: strings.Repeat("i", api.MaxClientMsgIDLen+1)}})
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "client_msg_id")
}
