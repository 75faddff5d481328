package identity

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Authorize decides one call to method on a server of role self: it returns the caller's
// identity (the zero ID for an anonymous caller of a public method), or an error with the
// gRPC status to answer: Unauthenticated without a verified identity, PermissionDenied when
// the identity may not call method.
func (p Policy) Authorize(ctx context.Context, self Role, method string) (ID, Rule, error) {
	rule, ok := p[method]
	caller, err := FromContext(ctx)
	if ok && rule.Public {
		if err != nil {
			return ID{}, rule, nil
		}
		return caller, rule, nil
	}
	if err != nil {
		return ID{}, rule, status.Errorf(codes.Unauthenticated, "%s: %v", method, err)
	}
	if !ok {
		return caller, rule, status.Errorf(codes.PermissionDenied, "%s: no %s may call it: the method has no rule", method, caller)
	}
	if !rule.Allows(self, caller.Role) {
		return caller, rule, status.Errorf(codes.PermissionDenied, "%s: a %s may not call it on a %s", method, caller.Role, self)
	}
	return caller, rule, nil
}

// check applies the rule's message check, with the status to answer.
func (r Rule) check(method string, caller ID, msg any) error {
	if r.Check == nil {
		return nil
	}
	if err := r.Check(caller, msg); err != nil {
		return status.Errorf(codes.PermissionDenied, "%s: %v", method, err)
	}
	return nil
}

// UnaryServerInterceptor enforces p on the unary calls of a server of role self.
func (p Policy) UnaryServerInterceptor(self Role) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		caller, rule, err := p.Authorize(ctx, self, info.FullMethod)
		if err != nil {
			return nil, err
		}
		if err := rule.check(info.FullMethod, caller, req); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor enforces p on the streams of a server of role self, checking every
// message the caller sends on them as it is received.
func (p Policy) StreamServerInterceptor(self Role) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		caller, rule, err := p.Authorize(ss.Context(), self, info.FullMethod)
		if err != nil {
			return err
		}
		if rule.Check != nil {
			ss = &checkedStream{ServerStream: ss, method: info.FullMethod, caller: caller, rule: rule}
		}
		return handler(srv, ss)
	}
}

// checkedStream checks each received message before the handler sees it.
type checkedStream struct {
	grpc.ServerStream
	method string
	caller ID
	rule   Rule
}

func (s *checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.rule.check(s.method, s.caller, m)
}
