package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/triarch-io/triarch/internal/testutil"
	"github.com/triarch-io/triarch/pkg/client"
)

func dial(t *testing.T, f *fakeGateway) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, f.addr, client.Options{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func tctx(t *testing.T) context.Context { return testutil.Context(t, 20*time.Second) }

// A send whose answer is lost is retried with the same ids: nothing is duplicated and the
// caller gets the original seqs.
func TestSendRetriesLostAnswersWithTheSameIDs(t *testing.T) {
	f := startFakeGateway(t)
	c := dial(t, f)
	f.set(func(f *fakeGateway) { f.lostAnswers = 2 })
	res, err := c.Send(tctx(t), "ch", client.Text("a", "one"), client.Outgoing{ClientMsgID: "mine", Payload: []byte("two")})
	require.NoError(t, err)
	require.Len(t, res, 2)
	require.Equal(t, uint64(1), res[0].Seq)
	require.Equal(t, uint64(2), res[1].Seq)
	require.Equal(t, "mine", res[1].ClientMsgID)
	require.Regexp(t, `^[0-9a-f]{32}$`, res[0].ClientMsgID)

	f.mu.Lock()
	defer f.mu.Unlock()
	require.Len(t, f.sendReqs, 3, "two lost answers, then the answer")
	for _, r := range f.sendReqs {
		require.Equal(t, res[0].ClientMsgID, r.GetMessages()[0].GetClientMsgId(), "every attempt carries the same generated id")
		require.Equal(t, "mine", r.GetMessages()[1].GetClientMsgId())
	}
	require.Len(t, f.logs["ch"], 2, "stored once")
}

func TestSendGivesUpAtTheDeadlineAndDoesNotRetryBadInput(t *testing.T) {
	f := startFakeGateway(t)
	c := dial(t, f)
	f.set(func(f *fakeGateway) { f.down = true })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Send(ctx, "ch", client.Text("a", "x"))
	require.Equal(t, codes.Unavailable, status.Code(err), err)
	require.Less(t, time.Since(start), 30*time.Second, "gave up, not retrying past the deadline")
	f.mu.Lock()
	require.Greater(t, len(f.sendReqs), 2, "retried")
	f.sendReqs = nil
	f.down = false
	f.mu.Unlock()

	_, err = c.Send(tctx(t), "", client.Text("a", "x"))
	require.Equal(t, codes.InvalidArgument, status.Code(err), err)
	require.Contains(t, err.Error(), "channel and messages required")
	f.mu.Lock()
	require.Len(t, f.sendReqs, 1, "not retried")
	f.mu.Unlock()
}

// A send that was retried because the gateway answered Unavailable, and whose last attempt the
// deadline then cut short, fails with Unavailable and the last answer: why it retried, not
// which timer happened to fire first (on a loaded machine either may).
func TestSendCutByTheDeadlineAfterRetriesSaysUnavailable(t *testing.T) {
	f := startFakeGateway(t)
	c := dial(t, f)
	f.set(func(f *fakeGateway) { f.down, f.hangAfter = true, 1 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := c.Send(ctx, "ch", client.Text("a", "x"))
	require.Equal(t, codes.Unavailable, status.Code(err), err)
	require.Contains(t, err.Error(), "fake: no leader")
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Len(t, f.sendReqs, 2, "one answer, then an attempt the deadline cut")
}

// An overloaded cluster's ResourceExhausted is retried after its delay, as Unavailable is: the
// pause between retries is the client's, not the gateway's.
func TestSendRetriesOverloadAfterItsDelay(t *testing.T) {
	f := startFakeGateway(t)
	c := dial(t, f)
	f.set(func(f *fakeGateway) { f.busy = 2 })
	res, err := c.Send(tctx(t), "ch", client.Text("a", "x"))
	require.NoError(t, err)
	require.Equal(t, uint64(1), res[0].Seq)
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Len(t, f.sendReqs, 3, "two overloaded answers, then the send")
}

// A ResourceExhausted without a retry delay is a quota: answered at once, not retried.
func TestSendDoesNotRetryAQuota(t *testing.T) {
	f := startFakeGateway(t)
	c := dial(t, f)
	f.set(func(f *fakeGateway) { f.quota = true })
	_, err := c.Send(tctx(t), "ch", client.Text("a", "x"))
	require.Equal(t, codes.ResourceExhausted, status.Code(err), err)
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Len(t, f.sendReqs, 1)
}

func TestReadPages(t *testing.T) {
	f := startFakeGateway(t)
	c := dial(t, f)
	for i := range 5 {
		_, err := c.Send(tctx(t), "ch", client.Text("s", fmt.Sprint(i)))
		require.NoError(t, err)
	}
	page, err := c.Read(tctx(t), "ch", 2, 2)
	require.NoError(t, err)
	require.Len(t, page.Messages, 2)
	require.Equal(t, uint64(2), page.Messages[0].Seq)
	require.Equal(t, "1", string(page.Messages[0].Payload))
	require.Equal(t, "ch", page.Messages[0].Channel)
	require.False(t, page.Messages[0].CommitTime.IsZero())
	require.Equal(t, uint64(4), page.NextSeq)
	require.Equal(t, uint64(5), page.LastSeq)

	_, err = c.Read(tctx(t), "nope", 1, 0)
	require.Equal(t, codes.NotFound, status.Code(err))
}

// A subscription whose stream keeps breaking resumes after the last delivered message: the
// callback sees every message once, in order, including those sent while it was resuming.
func TestSubscribeResumesExactlyOnce(t *testing.T) {
	f := startFakeGateway(t)
	c := dial(t, f)
	_, err := c.Send(tctx(t), "ch", client.Text("s", "first"))
	require.NoError(t, err)
	f.set(func(f *fakeGateway) { f.streamLimit = 3 })

	const n = 40
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 2; i <= n; i++ {
			if _, err := c.Send(tctx(t), "ch", client.Text("s", fmt.Sprint(i))); err != nil {
				t.Error(err)
				return
			}
		}
	})
	var got []uint64
	stop := errors.New("stop")
	err = c.Subscribe(tctx(t), "ch", 0, func(m client.Message) error {
		got = append(got, m.Seq)
		if m.Seq == n {
			return stop
		}
		return nil
	})
	wg.Wait()
	require.ErrorIs(t, err, stop)
	require.Len(t, got, n)
	for i, s := range got {
		require.Equal(t, uint64(i+1), s)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Greater(t, len(f.resumes), n/3, "the stream broke every 3 messages")
	for i := 1; i < len(f.resumes); i++ {
		require.Greater(t, f.resumes[i], f.resumes[i-1], "each resume starts after the last delivered")
	}
}

func TestSubscribeEnds(t *testing.T) {
	f := startFakeGateway(t)
	c := dial(t, f)

	// For good: an unknown channel.
	err := c.Subscribe(tctx(t), "nope", 1, func(client.Message) error { return nil })
	require.Equal(t, codes.NotFound, status.Code(err), err)

	// Cleanly: the context ends.
	_, err = c.Send(tctx(t), "ch", client.Text("s", "x"))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	seen := make(chan struct{})
	go func() {
		<-seen
		cancel()
	}()
	err = c.Subscribe(ctx, "ch", 1, func(client.Message) error {
		close(seen)
		return nil
	})
	require.NoError(t, err)
}

func TestDialFailsWhenNoGatewayAnswers(t *testing.T) {
	f := startFakeGateway(t)
	addr := f.addr
	f.srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := client.Dial(ctx, addr, client.Options{})
	require.Error(t, err)
	require.Contains(t, err.Error(), "not reachable")
}
