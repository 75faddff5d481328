package grpcx

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A panicking handler must cost one call, never the node: a crashed replica
// or arbiter takes every channel it hosts with it, which is exactly the
// failure the invariants say bad input must not cause. Only the handler's
// own goroutine is covered; goroutines a handler starts must recover
// themselves.

func unaryRecovery(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = handlePanic(ctx, log, info.FullMethod, r)
			}
		}()
		return handler(ctx, req)
	}
}

func streamRecovery(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = handlePanic(ss.Context(), log, info.FullMethod, r)
			}
		}()
		return handler(srv, ss)
	}
}

// handlePanic logs the panic with its stack and marks the call's span, then
// returns the status the client sees. The panic value stays out of the
// status: it may hold internal state, and the log has it.
func handlePanic(ctx context.Context, log *slog.Logger, method string, r any) error {
	stack := debug.Stack()
	log.ErrorContext(ctx, "grpc handler panicked",
		slog.String("method", method),
		slog.String("panic", fmt.Sprint(r)),
		slog.String("stack", string(stack)),
	)
	span := trace.SpanFromContext(ctx)
	span.RecordError(fmt.Errorf("panic: %v", r))
	span.SetStatus(codes.Error, "handler panicked")
	return status.Errorf(grpccodes.Internal, "internal error in %s", method)
}
