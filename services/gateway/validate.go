package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/api"
)

// Limits of the public API (docs/ARCHITECTURE.md, "The contract"). The numbers live in
// pkg/api, which the replicas enforce too; the gateway's own are the read limits.
const (
	// MaxChannelIDLen is the longest channel id; ids match [A-Za-z0-9_.:@-]{1,128}.
	MaxChannelIDLen = api.MaxChannelIDLen
	// MaxPayloadBytes bounds one message's payload.
	MaxPayloadBytes = api.MaxPayloadBytes
	// MaxBatchMessages bounds the messages of one send.
	MaxBatchMessages = api.MaxBatchMessages
	// MaxBatchBytes bounds the encoded size of one send's messages (ids, headers and payloads).
	MaxBatchBytes = api.MaxBatchBytes
	// MaxClientMsgIDLen bounds a client_msg_id.
	MaxClientMsgIDLen = api.MaxClientMsgIDLen
	// MaxSenderLen bounds a message's sender, in bytes.
	MaxSenderLen = api.MaxSenderLen
	// MaxHeaders, MaxHeaderKeyLen and MaxHeaderBytes bound a message's headers: how many, a
	// key's length, and the keys' and values' bytes together.
	MaxHeaders      = api.MaxHeaders
	MaxHeaderKeyLen = api.MaxHeaderKeyLen
	MaxHeaderBytes  = api.MaxHeaderBytes
	// MaxReplication bounds a channel's replication factor.
	MaxReplication = 9
	// DefaultReadLimit and MaxReadLimit bound a read's message count.
	DefaultReadLimit = 100
	MaxReadLimit     = 1000
)

// ErrorReasonTooLarge is the google.rpc.ErrorInfo reason of input over a size limit. It is the
// replicas' reason too, and REST answers it with HTTP 413.
const ErrorReasonTooLarge = "TOO_LARGE"

// errorDomain is the google.rpc.ErrorInfo domain of triarch's errors.
const errorDomain = "triarch.io"

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

// tooLarge is InvalidArgument with the TOO_LARGE reason and the limit that was exceeded.
func tooLarge(limit int, format string, args ...any) error {
	st, err := status.New(codes.InvalidArgument, fmt.Sprintf(format, args...)).WithDetails(&errdetails.ErrorInfo{
		Reason: ErrorReasonTooLarge, Domain: errorDomain, Metadata: map[string]string{"limit": strconv.Itoa(limit)}})
	if err != nil {
		return status.Errorf(codes.InvalidArgument, format, args...)
	}
	return st.Err()
}

// ValidChannelID reports why id is not a valid channel id, or nil.
func ValidChannelID(id string) error {
	if id == "" {
		return invalid("channel_id is required")
	}
	if len(id) > MaxChannelIDLen {
		return invalid("channel_id is %d bytes long; at most %d", len(id), MaxChannelIDLen)
	}
	for i := 0; i < len(id); i++ {
		if !channelIDByte(id[i]) {
			return invalid("channel_id %q: byte %q at position %d is not allowed; use letters, digits and _ . : @ -",
				id, id[i], i)
		}
	}
	return nil
}

func channelIDByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '_', '.', ':', '@', '-':
		return true
	}
	return false
}

// prepareBatch checks a send's messages against the limits and gives every message without a
// client_msg_id a generated one. generated[i] says whether message i's id was generated. The
// size limit applies after generation, as the replicas count it.
func prepareBatch(msgs []*triarchv1.MessageInput) (generated []bool, err error) {
	switch {
	case len(msgs) == 0:
		return nil, invalid("messages: a send needs at least one message")
	case len(msgs) > MaxBatchMessages:
		return nil, tooLarge(MaxBatchMessages, "messages: %d messages in one send; at most %d", len(msgs), MaxBatchMessages)
	}
	generated = make([]bool, len(msgs))
	total := 0
	for i, m := range msgs {
		if m == nil {
			return nil, invalid("messages[%d] is empty", i)
		}
		if n := len(m.GetPayload()); n > MaxPayloadBytes {
			return nil, tooLarge(MaxPayloadBytes, "messages[%d].payload is %d bytes; at most %d (1 MiB)", i, n, MaxPayloadBytes)
		}
		if err := api.CheckFields(i, m); err != nil {
			return nil, invalid("%v", err)
		}
		if m.GetClientMsgId() == "" {
			m.ClientMsgId = NewClientMsgID()
			generated[i] = true
		}
		total += proto.Size(m)
	}
	if total > MaxBatchBytes {
		return nil, tooLarge(MaxBatchBytes, "messages: the send is %d bytes; at most %d (4 MiB) in one send", total, MaxBatchBytes)
	}
	return generated, nil
}

// NewClientMsgID returns a random 128-bit id in hex, for messages sent without one.
func NewClientMsgID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it panics if the OS source breaks)
	return hex.EncodeToString(b[:])
}
