package gateway

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/triarch-io/triarch/pkg/auth"
)

// Client authentication and authorization (pkg/auth). Every public RPC calls authorize first,
// with the one action and channel it acts on; REST calls reach the same handlers through
// grpc-gateway, which passes the Authorization header on as "authorization" metadata.

// allChannels is the channel admin calls are authorized on: only a grant whose pattern matches
// every channel ("*") allows them.
const allChannels = "*"

// authorize checks that the caller may do action to channel, and charges the call to its
// quotas (quota.go). With no credential source configured (neither --auth-tokens nor
// --auth-jwks) everyone may do everything, as the one caller "anonymous".
func (h *handler) authorize(ctx context.Context, action auth.Action, channel string) error {
	release, err := h.admit(ctx, action, channel)
	release() // only a subscription holds anything, and it calls admit itself
	return err
}

// admit is authorize for a subscription: release gives its slot back when it ends.
func (h *handler) admit(ctx context.Context, action auth.Action, channel string) (release func(), err error) {
	name := anonymous
	if h.auth != nil {
		var cred string
		if md, ok := metadata.FromIncomingContext(ctx); ok {
			if v := md.Get("authorization"); len(v) > 0 {
				cred = v[0]
			}
		}
		id, err := h.auth.Authenticate(ctx, cred)
		if err != nil {
			return func() {}, status.Error(codes.Unauthenticated, err.Error())
		}
		if !id.Allows(action, channel) {
			if channel == allChannels {
				return func() {}, status.Errorf(codes.PermissionDenied, "%s may not %s: that needs a grant on every channel (\"*\")", id.Name, action)
			}
			return func() {}, status.Errorf(codes.PermissionDenied, "%s may not %s channel %s", id.Name, action, channel)
		}
		name = id.Name
	}
	return h.quotas.admit(name, action)
}
