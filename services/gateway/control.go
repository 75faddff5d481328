package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	channelctlv1 "github.com/triarch-io/triarch/gen/triarch/channelctl/v1"
	"github.com/triarch-io/triarch/pkg/members"
)

// Calls to the channel control tier: the owner of the channel's slot first, then the others.

// askControl calls f on channelctls until one answers: first the one known to own the
// channel, then the one that answered last, then the others. A NotOwner answer sends the
// call to the owner it names. An error that another channelctl could not change (NotFound,
// InvalidArgument, ...) is returned at once; when every channelctl was unreachable the error
// is Unavailable and lists them.
func (r *Router) askControl(ctx context.Context, channel string, f func(context.Context, channelctlv1.ChannelControlServiceClient) error) error {
	order := r.controlOrder(channel)
	if len(order) == 0 {
		return finalError{r.unavailable("channel %s: no channelctl is configured (--channelctls) to resolve channels", channel)}
	}
	q := members.NewQueue(order)
	var errs []string
	for addr, ok := q.Next(); ok; addr, ok = q.Next() {
		cc, err := r.conns.get(addr)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", addr, err))
			continue
		}
		actx, cancel := context.WithTimeout(ctx, r.cfg.AttemptTimeout)
		err = f(actx, channelctlv1.NewChannelControlServiceClient(cc))
		cancel()
		if err == nil {
			r.preferControl(addr)
			return nil
		}
		st := status.Convert(err)
		if owner := notOwner(st); owner != "" {
			r.setOwner(channel, owner)
			q.Redirect(owner)
			errs = append(errs, fmt.Sprintf("%s: not the owner (owner is %s)", addr, owner))
			continue
		}
		if !retryableControl(err) {
			return err
		}
		if ctx.Err() != nil {
			break
		}
		errs = append(errs, fmt.Sprintf("%s: %s: %s", addr, st.Code(), st.Message()))
	}
	return status.Errorf(codes.Unavailable, "channel %s: no channelctl could answer: %s", channel, strings.Join(errs, "; "))
}

// controlOrder is the order channelctls are asked about channel: its owner, when known, then
// every channelctl from the one that answered last.
func (r *Router) controlOrder(channel string) []string {
	r.mu.RLock()
	owner := r.owners[channel]
	r.mu.RUnlock()
	return members.LeaderFirst(owner, r.cfg.Channelctls, int(r.ctlFirst.Load()))
}

func (r *Router) preferControl(addr string) {
	for i, a := range r.cfg.Channelctls {
		if a == addr {
			r.ctlFirst.Store(uint32(i))
			return
		}
	}
}

func (r *Router) setOwner(channel, owner string) {
	r.mu.Lock()
	if len(r.owners) >= r.cfg.MaxRoutes {
		clear(r.owners)
	}
	r.owners[channel] = owner
	r.mu.Unlock()
}

func notOwner(st *status.Status) string {
	if st.Code() != codes.FailedPrecondition {
		return ""
	}
	for _, d := range st.Details() {
		if no, ok := d.(*channelctlv1.NotOwner); ok {
			return no.GetOwnerAddress()
		}
	}
	return ""
}

// finalError marks an error that retrying cannot change, whatever its code.
type finalError struct{ err error }

func (e finalError) Error() string { return e.err.Error() }

// GRPCStatus makes the wrapped status the error's status.
func (e finalError) GRPCStatus() *status.Status { return status.Convert(e.err) }

// retryableControl reports whether a failed call to the control tier may succeed later.
func retryableControl(err error) bool {
	var fe finalError
	if errors.As(err, &fe) {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.ResourceExhausted:
		return true
	}
	return false
}
