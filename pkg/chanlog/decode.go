package chanlog

import (
	"encoding/binary"
	"errors"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// batchView is what applying an entry needs of its LogBatch. Applying runs on every replica for
// every entry, and decoding the whole LogBatch (payloads, senders and headers copied into new
// messages) was most of its cost; the payloads are needed only by reads (Messages).
type batchView struct {
	ids                    [][]byte // client_msg_id of each message, in order (aliasing the entry)
	proposeTime            time.Time
	proposerID, proposalID uint64
	// nonces are the messages' nonces, in order; shorter than ids (often empty) when the
	// rest are 0.
	nonces []uint64
}

// nonce is message i's nonce (0 when the entry has none for it).
func (v *batchView) nonce(i int) uint64 {
	if i < len(v.nonces) {
		return v.nonces[i]
	}
	return 0
}

// LogBatch and MessageInput field numbers (proto/triarch/replica/v1, proto/triarch/v1).
const (
	fieldBatchMessages    = 1
	fieldBatchProposeTime = 2
	fieldBatchProposer    = 3
	fieldBatchProposal    = 4
	fieldBatchNonces      = 6

	fieldInputClientMsgID = 1
	fieldInputSender      = 2
	fieldInputHeaders     = 4

	fieldTimestampSeconds = 1
	fieldTimestampNanos   = 2
)

var (
	errInvalidUTF8 = errors.New("string field contains invalid UTF-8")
	errFieldNumber = errors.New("invalid field number")
	// errPackedFixed64 is a packed run of fixed64 values whose length is not a multiple of 8.
	errPackedFixed64 = errors.New("packed fixed64 field ends inside a value")
)

// decodeBatch reads a LogBatch as proto.Unmarshal would, and refuses exactly what it refuses,
// so that every replica skips the same entries whichever decoder it runs: malformed wire data
// and invalid UTF-8 in any string field (proto3 strings). As in proto.Unmarshal, a field with
// an unexpected wire type is an unknown field and skipped, a repeated scalar takes its last
// value, repeated occurrences of propose_time merge, and nonces are read packed or not, a
// packed run that does not end on a whole value being malformed.
func decodeBatch(b []byte) (batchView, error) {
	var (
		v       batchView
		seconds int64
		nanos   int32
	)
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return batchView{}, err
		}
		b = b[n:]
		switch {
		case num == fieldBatchMessages && typ == protowire.BytesType:
			var m []byte
			if m, n = protowire.ConsumeBytes(b); n >= 0 {
				id, err := inputID(m)
				if err != nil {
					return batchView{}, err
				}
				v.ids = append(v.ids, id)
			}
		case num == fieldBatchProposeTime && typ == protowire.BytesType:
			var m []byte
			if m, n = protowire.ConsumeBytes(b); n >= 0 {
				if err := timestamp(m, &seconds, &nanos); err != nil {
					return batchView{}, err
				}
			}
		case num == fieldBatchProposer && typ == protowire.VarintType:
			v.proposerID, n = protowire.ConsumeVarint(b)
		case num == fieldBatchProposal && typ == protowire.VarintType:
			v.proposalID, n = protowire.ConsumeVarint(b)
		case num == fieldBatchNonces && typ == protowire.Fixed64Type:
			var x uint64
			if x, n = protowire.ConsumeFixed64(b); n >= 0 {
				v.nonces = append(v.nonces, x)
			}
		case num == fieldBatchNonces && typ == protowire.BytesType:
			var p []byte
			if p, n = protowire.ConsumeBytes(b); n >= 0 {
				if len(p)%8 != 0 {
					return batchView{}, errPackedFixed64
				}
				for ; len(p) > 0; p = p[8:] {
					v.nonces = append(v.nonces, binary.LittleEndian.Uint64(p))
				}
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return batchView{}, protowire.ParseError(n)
		}
		b = b[n:]
	}
	// As timestamppb's AsTime of the decoded (or absent) propose_time.
	v.proposeTime = time.Unix(seconds, int64(nanos)).UTC()
	return v, nil
}

// consumeTag reads a field's tag; proto.Unmarshal refuses field numbers out of the valid range.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return 0, 0, 0, protowire.ParseError(n)
	}
	if num > protowire.MaxValidNumber {
		return 0, 0, 0, errFieldNumber
	}
	return num, typ, n, nil
}

// inputID returns a MessageInput's client_msg_id, checking the rest without copying it.
func inputID(b []byte) ([]byte, error) {
	var id []byte
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return nil, err
		}
		b = b[n:]
		switch {
		case (num == fieldInputClientMsgID || num == fieldInputSender) && typ == protowire.BytesType:
			var s []byte
			if s, n = protowire.ConsumeBytes(b); n >= 0 {
				if !utf8.Valid(s) {
					return nil, errInvalidUTF8
				}
				if num == fieldInputClientMsgID {
					id = s
				}
			}
		case num == fieldInputHeaders && typ == protowire.BytesType:
			var e []byte
			if e, n = protowire.ConsumeBytes(b); n >= 0 {
				if err := headerEntry(e); err != nil {
					return nil, err
				}
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
	}
	return id, nil
}

// headerEntry checks one entry of the map<string, string> headers.
func headerEntry(b []byte) error {
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return err
		}
		b = b[n:]
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			var s []byte
			if s, n = protowire.ConsumeBytes(b); n >= 0 && !utf8.Valid(s) {
				return errInvalidUTF8
			}
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// timestamp merges an encoded google.protobuf.Timestamp into seconds and nanos.
func timestamp(b []byte, seconds *int64, nanos *int32) error {
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return err
		}
		b = b[n:]
		switch {
		case num == fieldTimestampSeconds && typ == protowire.VarintType:
			var x uint64
			x, n = protowire.ConsumeVarint(b)
			*seconds = int64(x)
		case num == fieldTimestampNanos && typ == protowire.VarintType:
			var x uint64
			x, n = protowire.ConsumeVarint(b)
			*nanos = int32(x)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}
