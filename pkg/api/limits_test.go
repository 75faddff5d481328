package api

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

func TestCheckFields(t *testing.T) {
	require.NoError(t, CheckFields(0, nil))
	require.NoError(t, CheckFields(0, &triarchv1.MessageInput{}))
	at := &triarchv1.MessageInput{
		ClientMsgId: strings.Repeat("i", MaxClientMsgIDLen),
		Sender:      strings.Repeat("s", MaxSenderLen),
		Headers:     map[string]string{strings.Repeat("k", MaxHeaderKeyLen): strings.Repeat("v", MaxHeaderBytes-MaxHeaderKeyLen)},
	}
	require.NoError(t, CheckFields(0, at), "every field at its limit")

	for name, tc := range map[string]struct {
		m    *triarchv1.MessageInput
		want string
	}{
		"client_msg_id": {&triarchv1.MessageInput{ClientMsgId: strings.Repeat("i", MaxClientMsgIDLen+1)}, "messages[3].client_msg_id is 257 bytes long; at most 256"},
		"sender":        {&triarchv1.MessageInput{Sender: strings.Repeat("s", MaxSenderLen+1)}, "messages[3].sender is 257 bytes long; at most 256"},
		"header count": {&triarchv1.MessageInput{Headers: func() map[string]string {
			h := map[string]string{}
			for i := range MaxHeaders + 1 {
				h[strings.Repeat("k", i+1)] = ""
			}
			return h
		}()}, "messages[3].headers: 33 headers; at most 32"},
		"header key":   {&triarchv1.MessageInput{Headers: map[string]string{strings.Repeat("k", MaxHeaderKeyLen+1): ""}}, "is 129 bytes long; at most 128"},
		"header bytes": {&triarchv1.MessageInput{Headers: map[string]string{"k": strings.Repeat("v", MaxHeaderBytes)}}, "16385 bytes (keys and values); at most 16384"},
		"empty key":    {&triarchv1.MessageInput{Headers: map[string]string{"": "v"}}, "messages[3].headers: a header with an empty key"},
	} {
		t.Run(name, func(t *testing.T) {
			err := CheckFields(3, tc.m)
			require.ErrorContains(t, err, tc.want)
			require.Less(t, len(err.Error()), 200, "the message quotes no long key or value whole")
		})
	}
}
