package api

import (
	"fmt"

	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

// Limits of the public API. The gateway refuses input past them before routing it, and the
// replicas refuse it again before proposing it (docs/ARCHITECTURE.md, "The contract").
const (
	// MaxChannelIDLen is the longest channel id; ids match [A-Za-z0-9_.:@-]{1,128}.
	MaxChannelIDLen = 128
	// MaxPayloadBytes bounds one message's payload (1 MiB).
	MaxPayloadBytes = 1 << 20
	// MaxBatchMessages bounds the messages of one send.
	MaxBatchMessages = 1000
	// MaxBatchBytes bounds the encoded size of one send's messages (ids, sender, headers and
	// payloads; 4 MiB).
	MaxBatchBytes = 4 << 20
	// MaxClientMsgIDLen bounds a client_msg_id, in bytes.
	MaxClientMsgIDLen = 256
	// MaxSenderLen bounds a message's sender, in bytes.
	MaxSenderLen = 256
	// MaxHeaders bounds the number of a message's headers.
	MaxHeaders = 32
	// MaxHeaderKeyLen bounds one header key, in bytes.
	MaxHeaderKeyLen = 128
	// MaxHeaderBytes bounds a message's headers together: the sum of their keys' and values'
	// lengths in bytes (16 KiB).
	MaxHeaderBytes = 16 << 10
)

// CheckFields checks a message's client_msg_id, sender and headers against their limits and
// says which one it breaks, naming the message as messages[i]; nil when they are all within.
// The payload and the batch are the callers' to check, as their errors differ (TOO_LARGE).
func CheckFields(i int, m *triarchv1.MessageInput) error {
	if n := len(m.GetClientMsgId()); n > MaxClientMsgIDLen {
		return fmt.Errorf("messages[%d].client_msg_id is %d bytes long; at most %d", i, n, MaxClientMsgIDLen)
	}
	if n := len(m.GetSender()); n > MaxSenderLen {
		return fmt.Errorf("messages[%d].sender is %d bytes long; at most %d", i, n, MaxSenderLen)
	}
	hs := m.GetHeaders()
	if len(hs) > MaxHeaders {
		return fmt.Errorf("messages[%d].headers: %d headers; at most %d", i, len(hs), MaxHeaders)
	}
	total := 0
	for k, v := range hs {
		if k == "" {
			// A header nobody can name: refused rather than stored as a puzzle for readers.
			return fmt.Errorf("messages[%d].headers: a header with an empty key", i)
		}
		if len(k) > MaxHeaderKeyLen {
			return fmt.Errorf("messages[%d].headers: key %.32q... is %d bytes long; at most %d", i, k, len(k), MaxHeaderKeyLen)
		}
		total += len(k) + len(v)
	}
	if total > MaxHeaderBytes {
		return fmt.Errorf("messages[%d].headers are %d bytes (keys and values); at most %d (16 KiB)", i, total, MaxHeaderBytes)
	}
	return nil
}
