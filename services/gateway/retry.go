package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/pkg/backoff"
)

// Retries: one attempt per resolve-and-call, classified by what the replica answered
// (follow its hint, re-resolve, retry after a backoff, or fail), within the call's deadline.

// do runs f against the channel's leader until it succeeds, fails for good, or the deadline
// (the caller's, or DefaultTimeout) leaves no time for another attempt. Each attempt (resolve
// and call) gets one context bounded by AttemptTimeout and the call's deadline.
func (r *Router) do(ctx context.Context, channel string, create bool, f func(context.Context, replicav1.ReplicaServiceClient) error) error {
	start := r.cfg.Now()
	dl, own := r.deadlineOf(ctx, start)
	var (
		stale   uint64
		hops    int
		quick   bool // the one immediate re-resolve has been used
		lastErr error
		bo      = r.backoff()
	)
	for attempt, now := 1, start; ; attempt, now = attempt+1, r.cfg.Now() {
		actx, acancel := ctx, context.CancelFunc(nil)
		if adl := now.Add(r.cfg.AttemptTimeout); own || adl.Before(dl) {
			actx, acancel = context.WithDeadline(ctx, earliest(dl, adl))
		}
		rt, err := r.route(actx, channel, create, stale)
		if err == nil {
			cctx, release := r.attempts.track(actx, rt.leader)
			err = f(cctx, rt.client)
			if release() {
				err = deadNodeError(rt.leader)
			}
		}
		if acancel != nil {
			acancel()
		}
		if err == nil {
			return nil
		}
		if rt == nil {
			if ctx.Err() == nil && !retryableControl(err) {
				return err
			}
		} else {
			v, hint := classifyReplica(err, rt)
			if v == verdictFail {
				return err
			}
			r.retried(ctx, channel, rt, err)
			if v == verdictFollow && hops < maxHops && attempt < r.cfg.MaxAttempts && r.follow(rt, hint) {
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
		if attempt >= r.cfg.MaxAttempts || !pause(ctx, bo, dl) {
			return r.giveUpCtx(ctx, channel, r.cfg.Now().Sub(start), attempt, lastErr)
		}
	}
}

// deadlineOf is the time a call must be answered by: slightly before the caller's deadline,
// so that an Unavailable answer with its reason reaches the caller before the caller's own
// deadline cuts the call, or DefaultTimeout from now when the caller set none. own reports
// that the router imposes it (ctx alone does not end by then).
func (r *Router) deadlineOf(ctx context.Context, now time.Time) (dl time.Time, own bool) {
	cdl, ok := ctx.Deadline()
	if !ok {
		return now.Add(r.cfg.DefaultTimeout), true
	}
	margin := min(50*time.Millisecond, cdl.Sub(now)/10)
	return cdl.Add(-margin), margin > 0
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// retryControl runs f, a call to the channel control tier, until it succeeds, fails for good,
// or the deadline leaves no time for another attempt.
func (r *Router) retryControl(ctx context.Context, channel string, f func(context.Context) error) error {
	start := r.cfg.Now()
	bo := r.backoff()
	for attempt := 1; ; attempt++ {
		err := f(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() == nil && !retryableControl(err) {
			return err
		}
		dl, _ := ctx.Deadline()
		if attempt >= r.cfg.MaxAttempts || !pause(ctx, bo, dl) {
			return r.giveUpCtx(ctx, channel, r.cfg.Now().Sub(start), attempt, err)
		}
	}
}

// deadline is ctx ending at deadlineOf, for calls that are not on the hot path.
func (r *Router) deadline(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, _ := r.deadlineOf(ctx, r.cfg.Now())
	return context.WithDeadline(ctx, dl)
}

func (r *Router) retried(ctx context.Context, channel string, rt *route, err error) {
	st := status.Convert(err)
	r.retries.Add(ctx, 1, metric.WithAttributes(attribute.String("code", st.Code().String())))
	r.log.DebugContext(ctx, "retrying", "channel", channel, "leader", rt.leader, "address", rt.addr,
		"code", st.Code().String(), "err", st.Message())
}

type verdict int

// classifyReplica says what to do after a replica call failed with err.
func classifyReplica(err error, rt *route) (verdict, *replicav1.NotLeader) {
	st := status.Convert(err)
	switch st.Code() {
	case codes.FailedPrecondition:
		for _, d := range st.Details() {
			if nl, ok := d.(*replicav1.NotLeader); ok {
				if nl.GetLeaderNodeId() != 0 && nl.GetLeaderAddress() != "" && nl.GetLeaderNodeId() != rt.leader {
					return verdictFollow, nl
				}
				return verdictRetry, nil
			}
		}
		return verdictFail, nil
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Aborted:
		if errors.Is(err, errNodeDead) {
			// The arbiter declared the leader dead: another is being elected, and the
			// channel control tier answers with it as soon as it is.
			return verdictResolve, nil
		}
		// Unreachable, overloaded, lease lapsed, leadership lost, or the attempt timed out
		// (the caller's own deadline ends the loop before this is acted on).
		return verdictRetry, nil
	case codes.NotFound:
		// channelctl knows the channel (it resolved it), so the cached route is stale: the
		// channel hibernated (or the replica restarted) since. Waiting would not change that;
		// the resolve that follows wakes it.
		return verdictResolve, nil
	}
	return verdictFail, nil
}

// giveUpCtx ends a call that ran out of attempts or time: Canceled when the caller cancelled,
// else Unavailable with a retry delay.
func (r *Router) giveUpCtx(ctx context.Context, channel string, took time.Duration, attempts int, last error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return status.FromContextError(ctx.Err()).Err()
	}
	return r.giveUp(channel, took, attempts, last)
}

func (r *Router) giveUp(channel string, took time.Duration, attempts int, last error) error {
	reason := "no error"
	if last != nil {
		st := status.Convert(last)
		reason = st.Code().String() + ": " + st.Message()
	}
	return r.unavailable("channel %s: no leader could serve the call after %d attempts in %v (last error %s)",
		channel, attempts, took.Round(time.Millisecond), reason)
}

// unavailable is an Unavailable status that suggests when to retry.
func (r *Router) unavailable(format string, args ...any) error {
	st, err := status.New(codes.Unavailable, fmt.Sprintf(format, args...)).WithDetails(
		&errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfter)})
	if err != nil {
		return status.Errorf(codes.Unavailable, format, args...)
	}
	return st.Err()
}

// backoff is a jittered, doubling pause.
// backoff is a call's pauses between attempts (pkg/backoff).
func (r *Router) backoff() *backoff.Backoff {
	b := backoff.New(r.cfg.MinBackoff, r.cfg.MaxBackoff)
	return &b
}

// minAttemptTime is the least time worth starting another attempt with.
const minAttemptTime = 5 * time.Millisecond

// pause waits before the next attempt. It returns false, at once, when ctx ended or the
// deadline dl (none when zero) leaves too little time for another attempt after the pause.
func pause(ctx context.Context, bo *backoff.Backoff, dl time.Time) bool {
	return bo.Pause(ctx, dl, 0, 2*minAttemptTime)
}
