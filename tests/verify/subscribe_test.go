package verify

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/internal/verify"
)

// subscriber keeps one subscription to a channel open through the faults, as a chat client
// does, resuming from the next sequence number it expects whenever the stream breaks (a
// gateway killed, a leader changed), and records what it was delivered. The invariant it
// checks: every subscriber sees the channel's one order, with no gap and no repeat.
type subscriber struct {
	ch string

	mu  sync.Mutex
	got []verify.Entry
	err error // the first delivery out of order
}

// resumeEvery is the pause before a broken subscription is opened again.
const resumeEvery = 100 * time.Millisecond

func (s *subscriber) run(ctx context.Context, api triarchv1.TriarchServiceClient) {
	next := uint64(1)
	for ctx.Err() == nil {
		stream, err := api.SubscribeMessages(ctx, &triarchv1.SubscribeMessagesRequest{ChannelId: s.ch, FromSeq: next})
		for err == nil {
			var resp *triarchv1.SubscribeMessagesResponse
			if resp, err = stream.Recv(); err != nil {
				break
			}
			for _, m := range resp.GetMessages() {
				if m.GetSeq() != next {
					s.mu.Lock()
					s.err = fmt.Errorf("%s: subscription delivered seq %d where %d was next", s.ch, m.GetSeq(), next)
					s.mu.Unlock()
					return
				}
				s.mu.Lock()
				s.got = append(s.got, verify.Entry{Seq: m.GetSeq(), ID: m.GetClientMsgId()})
				s.mu.Unlock()
				next++
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(resumeEvery):
		}
	}
}

// subscriptionsAgree checks that every subscriber was delivered its channel's final log, in
// order, with nothing missing or repeated, within wait: what it got is a prefix of the final
// log at every moment (checked on delivery) and, once the channels are written for the last
// time, all of it.
func subscriptionsAgree(subs []*subscriber, final map[string][]verify.Entry, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		var errs []error
		for _, s := range subs {
			s.mu.Lock()
			got, err := append([]verify.Entry(nil), s.got...), s.err
			s.mu.Unlock()
			want := final[s.ch]
			switch {
			case err != nil:
				return err
			case len(got) > len(want):
				return fmt.Errorf("%s: subscription delivered %d messages, the channel holds %d", s.ch, len(got), len(want))
			}
			for i, e := range got {
				if e != want[i] {
					return fmt.Errorf("%s: subscription delivered %v at position %d, the channel holds %v", s.ch, e, i, want[i])
				}
			}
			if len(got) < len(want) {
				errs = append(errs, fmt.Errorf("%s: subscription at %d of %d messages", s.ch, len(got), len(want)))
			}
		}
		if len(errs) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", wait, errors.Join(errs...))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
