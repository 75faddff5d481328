package telemetry

import (
	"context"
	"io"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// Log attribute keys shared by every process, so log searches work the same
// for every tier.
const (
	LogKeyTraceID = "trace_id"
	LogKeySpanID  = "span_id"
	LogKeyService = "service"
	LogKeyNodeID  = "node_id"
)

// NewLogger returns a logger writing format ("json", otherwise text) to w
// whose records carry trace_id and span_id when logged with a context that
// holds a valid span (logger.InfoContext(ctx, ...)). Setup builds the
// process logger with it; tests and CLI commands use it directly.
func NewLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if format == logFormatJSON {
		h = slog.NewJSONHandler(w, hopts)
	} else {
		h = slog.NewTextHandler(w, hopts)
	}
	return slog.New(newTraceHandler(h))
}

// traceHandler adds the span of the record's context to the record.
//
// The ids must land at the top level even under logger.WithGroup, or a
// search for trace_id would miss grouped lines. Attributes on a record go
// into the innermost open group, so once a group is open the handler keeps
// the ungrouped handler (base) and replays the later WithGroup/WithAttrs
// calls (ops) on top of base plus the ids. That costs a rebuild per record,
// but only for grouped loggers inside a span.
type traceHandler struct {
	base  slog.Handler
	ops   []func(slog.Handler) slog.Handler
	inner slog.Handler // base with ops applied
}

func newTraceHandler(h slog.Handler) *traceHandler {
	return &traceHandler{base: h, inner: h}
}

func (h *traceHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.inner.Enabled(ctx, level)
}

func (h *traceHandler) Handle(ctx context.Context, r slog.Record) error {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return h.inner.Handle(ctx, r)
	}
	ids := []slog.Attr{
		slog.String(LogKeyTraceID, sc.TraceID().String()),
		slog.String(LogKeySpanID, sc.SpanID().String()),
	}
	if len(h.ops) == 0 {
		// Clone: the caller's record may share its attribute storage.
		r = r.Clone()
		r.AddAttrs(ids...)
		return h.inner.Handle(ctx, r)
	}
	withIDs := h.base.WithAttrs(ids)
	for _, op := range h.ops {
		withIDs = op(withIDs)
	}
	return withIDs.Handle(ctx, r)
}

func (h *traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	if len(h.ops) == 0 {
		base := h.base.WithAttrs(attrs)
		return &traceHandler{base: base, inner: base}
	}
	return h.with(func(inner slog.Handler) slog.Handler { return inner.WithAttrs(attrs) })
}

func (h *traceHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return h.with(func(inner slog.Handler) slog.Handler { return inner.WithGroup(name) })
}

func (h *traceHandler) with(op func(slog.Handler) slog.Handler) *traceHandler {
	// A fresh slice: siblings derived from the same logger must not share
	// (and overwrite) one backing array.
	ops := make([]func(slog.Handler) slog.Handler, len(h.ops), len(h.ops)+1)
	copy(ops, h.ops)
	return &traceHandler{base: h.base, ops: append(ops, op), inner: op(h.inner)}
}
