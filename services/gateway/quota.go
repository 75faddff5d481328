package gateway

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/triarch-io/triarch/pkg/auth"
)

// Quotas per caller (issue 17 item 3): a request rate, a rate of channel creations, and a cap
// on open subscriptions. A caller is the authenticated identity's name, or "anonymous" on a
// gateway that authenticates nobody, where the quotas then bound every caller together.
// Refusals are ResourceExhausted with a RetryInfo saying when the next request would pass, so
// the Go client and REST callers (429, Retry-After) back off rather than fail.

// QuotaConfig sets the quotas; a zero field is no limit.
type QuotaConfig struct {
	// RequestsPerSecond and RequestBurst bound each caller's calls (--rate-limit,
	// --rate-burst; the burst defaults to one second's worth).
	RequestsPerSecond float64
	RequestBurst      int
	// CreatesPerSecond bounds each caller's CreateChannel calls (--create-rate), with a burst
	// of ten.
	CreatesPerSecond float64
	// MaxSubscriptions caps each caller's open subscriptions (--max-subscriptions).
	MaxSubscriptions int
}

// anonymous is the caller of a gateway without authentication.
const anonymous = "anonymous"

// maxQuotaCallers bounds the per-caller state kept; past it the idle entries are dropped (a
// dropped caller starts with a full bucket, which only errs towards serving).
const maxQuotaCallers = 100_000

type quotas struct {
	cfg QuotaConfig
	now func() time.Time

	mu      sync.Mutex
	callers map[string]*callerQuota
}

type callerQuota struct {
	requests, creates *rate.Limiter
	subscriptions     int
	seen              time.Time
}

func newQuotas(cfg QuotaConfig, now func() time.Time) *quotas {
	if cfg.RequestBurst <= 0 {
		cfg.RequestBurst = max(1, int(cfg.RequestsPerSecond))
	}
	if now == nil {
		now = time.Now
	}
	return &quotas{cfg: cfg, now: now, callers: map[string]*callerQuota{}}
}

func (q *quotas) on() bool {
	return q != nil && (q.cfg.RequestsPerSecond > 0 || q.cfg.CreatesPerSecond > 0 || q.cfg.MaxSubscriptions > 0)
}

// caller returns name's state; q.mu is held.
func (q *quotas) caller(name string, now time.Time) *callerQuota {
	c := q.callers[name]
	if c == nil {
		if len(q.callers) >= maxQuotaCallers {
			q.evictIdle(now)
		}
		c = &callerQuota{}
		if q.cfg.RequestsPerSecond > 0 {
			c.requests = rate.NewLimiter(rate.Limit(q.cfg.RequestsPerSecond), q.cfg.RequestBurst)
		}
		if q.cfg.CreatesPerSecond > 0 {
			c.creates = rate.NewLimiter(rate.Limit(q.cfg.CreatesPerSecond), 10)
		}
		q.callers[name] = c
	}
	c.seen = now
	return c
}

// evictIdle drops the callers without open subscriptions not seen for a minute.
func (q *quotas) evictIdle(now time.Time) {
	for name, c := range q.callers {
		if c.subscriptions == 0 && now.Sub(c.seen) > time.Minute {
			delete(q.callers, name)
		}
	}
}

// admit charges one call of action to name, and for a subscription holds one of its slots
// until the returned release is called (release is never nil).
func (q *quotas) admit(name string, action auth.Action) (release func(), err error) {
	release = func() {}
	if !q.on() {
		return release, nil
	}
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	c := q.caller(name, now)
	if err := take(c.requests, now, name, "requests"); err != nil {
		return release, err
	}
	if action == auth.Create {
		if err := take(c.creates, now, name, "channel creations"); err != nil {
			return release, err
		}
	}
	if action == auth.Subscribe && q.cfg.MaxSubscriptions > 0 {
		if c.subscriptions >= q.cfg.MaxSubscriptions {
			return release, status.Errorf(codes.ResourceExhausted, "%s has %d subscriptions open, the most a caller may (--max-subscriptions)",
				name, c.subscriptions)
		}
		c.subscriptions++
		var once sync.Once
		release = func() {
			once.Do(func() {
				q.mu.Lock()
				c.subscriptions--
				q.mu.Unlock()
			})
		}
	}
	return release, nil
}

// take charges one token of l at now, or answers when one will be there.
func take(l *rate.Limiter, now time.Time, name, what string) error {
	if l == nil {
		return nil
	}
	r := l.ReserveN(now, 1)
	if !r.OK() {
		return status.Errorf(codes.ResourceExhausted, "%s: %s limit", name, what)
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		st, _ := status.New(codes.ResourceExhausted, fmt.Sprintf("%s is over its rate of %s (%.4g/s)", name, what, float64(l.Limit()))).
			WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
		return st.Err()
	}
	return nil
}
