//go:build plantedbug

package gateway

import (
	"os"
	"sync/atomic"

	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

// Planted bugs for the verification suite's self-test (make verify-selftest): a binary built
// with -tags plantedbug misbehaves as TRIARCH_PLANTED_BUG says, so that the suite can show its
// checkers catch the kind of bug they exist for. Binaries built without the tag contain none
// of this (planted_none.go).

// plantedEvery is how often a planted bug strikes: one call in this many.
const plantedEvery = 25

var plantedCalls atomic.Uint64

func planted(bug string) bool {
	return os.Getenv("TRIARCH_PLANTED_BUG") == bug && plantedCalls.Add(1)%plantedEvery == 0
}

// plantedLostAck ("lost-ack") acknowledges a send without sending it anywhere: an
// acknowledged message that no replica holds.
func plantedLostAck(req *triarchv1.SendMessagesRequest) (*triarchv1.SendMessagesResponse, bool) {
	if !planted("lost-ack") {
		return nil, false
	}
	out := &triarchv1.SendMessagesResponse{}
	for i, m := range req.GetMessages() {
		out.Results = append(out.Results, &triarchv1.SendResult{Seq: 1<<40 + uint64(i), ClientMsgId: m.GetClientMsgId()})
	}
	return out, true
}

// plantedStaleRead ("stale-read") drops the last message of a read that returned any: a read
// that misses a message acknowledged before it began.
func plantedStaleRead(resp *triarchv1.ReadMessagesResponse) {
	if n := len(resp.GetMessages()); n > 0 && planted("stale-read") {
		dropped := resp.GetMessages()[n-1].GetSeq()
		resp.Messages = resp.Messages[:n-1]
		resp.NextSeq, resp.LastSeq = dropped, dropped-1
	}
}
