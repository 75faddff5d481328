package gateway

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

// Subscriptions: a stream from the channel's leader, resumed on the next leader from the
// next expected sequence number, so the caller sees every message once, in order.

// Subscription receives a subscription's messages.
type Subscription struct {
	// Opened, when set, is called once, when the channel's leader has first been found (the
	// channel exists); errors before it are the caller's to report as such.
	Opened func()
	// Deliver receives consecutive committed messages, each batch following the previous one.
	// An error from it ends the subscription with that error.
	Deliver func([]*triarchv1.Message) error
}

// Subscribe delivers the channel's committed messages from seq from on until ctx ends (then it
// returns nil), Deliver fails, or no leader can be reached for DefaultTimeout. When the leader's
// stream breaks it finds the new leader and resumes from the next expected sequence number,
// dropping anything below it, so the caller sees every message once, in order.
func (r *Router) Subscribe(ctx context.Context, channel string, from uint64, sub Subscription) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(r.streams, cancel)()
	next := max(from, 1)
	// ended is the outcome once ctx is done: the caller went away (nil), or StopStreams.
	ended := func() error {
		if r.streams.Err() != nil {
			return r.unavailable("gateway is shutting down; resume the subscription to %s from seq %d", channel, next)
		}
		return nil
	}
	var (
		stale   uint64
		hops    int
		quick   bool // the one immediate re-resolve has been used
		opened  bool
		lastErr error
		outage  = r.cfg.Now() // start of the current period without a working stream
		bo      = r.backoff()
	)
	for attempt := 1; ; attempt++ {
		wctx, wcancel := context.WithDeadline(ctx, outage.Add(r.cfg.DefaultTimeout))
		rt, err := r.route(wctx, channel, false, stale)
		wcancel()
		if err == nil {
			if !opened && sub.Opened != nil {
				sub.Opened()
			}
			opened = true
			var progressed bool
			began := r.cfg.Now()
			pctx, release := r.attempts.track(ctx, rt.leader)
			progressed, err = r.pump(pctx, rt, &next, sub.Deliver)
			if release() && ctx.Err() == nil {
				err = deadNodeError(rt.leader)
			}
			var de deliverError
			if errors.As(err, &de) {
				return de.err
			}
			if progressed || r.cfg.Now().Sub(began) > r.cfg.DefaultTimeout/2 {
				// The stream worked: this break starts a new outage with a fresh budget.
				outage, attempt, hops, bo, quick = r.cfg.Now(), 0, 0, r.backoff(), false
			}
		}
		if ctx.Err() != nil {
			return ended()
		}
		if err != nil && rt == nil && !retryableControl(err) {
			return err
		}
		if rt != nil {
			v, hint := classifyReplica(err, rt)
			if v == verdictFail {
				return err
			}
			r.retried(ctx, channel, rt, err)
			if v == verdictFollow && hops < maxHops && r.follow(rt, hint) {
				hops++
				stale, lastErr = 0, err
				continue
			}
			r.invalidate(rt)
			stale = rt.leader
			if v == verdictResolve && !quick && attempt < r.cfg.MaxAttempts {
				quick, lastErr = true, err
				continue
			}
		}
		lastErr = err
		if attempt >= r.cfg.MaxAttempts || !pause(ctx, bo, outage.Add(r.cfg.DefaultTimeout)) {
			if ctx.Err() != nil {
				return ended()
			}
			return r.giveUp(channel, r.cfg.Now().Sub(outage), attempt, lastErr)
		}
	}
}

// deliverError carries an error of the subscriber's Deliver, which ends a subscription as is.
type deliverError struct{ err error }

func (e deliverError) Error() string { return e.err.Error() }

// pump reads one replica stream into deliver from *next on. It reports whether it delivered
// anything, and returns the error that ended the stream.
func (r *Router) pump(ctx context.Context, rt *route, next *uint64, deliver func([]*triarchv1.Message) error) (bool, error) {
	stream, err := rt.client.Subscribe(ctx, &replicav1.SubscribeRequest{ChannelId: rt.channel, FromSeq: *next})
	if err != nil {
		return false, err
	}
	progressed := false
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return progressed, status.Error(codes.Unavailable, "replica ended the subscription stream")
		}
		if err != nil {
			return progressed, err
		}
		msgs := resp.GetMessages()
		for len(msgs) > 0 && msgs[0].GetSeq() < *next {
			msgs = msgs[1:] // already delivered before a resume
		}
		n := 0
		for n < len(msgs) && msgs[n].GetSeq() == *next+uint64(n) {
			n++
		}
		if n > 0 {
			if err := deliver(msgs[:n]); err != nil {
				return progressed, deliverError{err}
			}
			*next += uint64(n)
			progressed = true
		}
		if n < len(msgs) {
			return progressed, status.Errorf(codes.Unavailable, "replica stream skipped from seq %d to %d; resubscribing",
				*next, msgs[n].GetSeq())
		}
	}
}
