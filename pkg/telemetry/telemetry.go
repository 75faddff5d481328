package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Telemetry is the tracing, metrics and logging of one process. Pass it
// down explicitly; nothing is registered globally.
type Telemetry struct {
	// TracerProvider is an SDK provider, also when no exporter is
	// configured, so spans carry real ids for propagation and log
	// correlation.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// Propagator is W3C tracecontext plus baggage.
	Propagator propagation.TextMapPropagator
	// Registry is this process's own registry (Go and process collectors
	// plus every OpenTelemetry instrument); MetricsHandler serves it.
	Registry *prometheus.Registry
	// Logger carries service and node_id on every line, and trace_id and
	// span_id on lines logged with a span's context.
	Logger *slog.Logger

	tp *sdktrace.TracerProvider
	mp *sdkmetric.MeterProvider
}

// Setup builds the process's telemetry from opts and the OTEL_* variables
// (read through opts.Getenv). Call it once per process and Shutdown on exit.
func Setup(ctx context.Context, opts Options) (*Telemetry, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}

	res, err := newResource(ctx, opts)
	if err != nil {
		return nil, err
	}
	logger := NewLogger(opts.LogWriter, opts.LogFormat, opts.LogLevel).With(
		slog.String(LogKeyService, serviceName(res)),
		slog.Uint64(LogKeyNodeID, opts.NodeID),
	)

	tp, err := newTracerProvider(ctx, opts, res, logger)
	if err != nil {
		return nil, err
	}
	reg, mp, err := newMetrics(res)
	if err != nil {
		return nil, errors.Join(err, tp.Shutdown(ctx))
	}

	return &Telemetry{
		TracerProvider: tp,
		MeterProvider:  mp,
		Propagator: propagation.NewCompositeTextMapPropagator(
			propagation.TraceContext{},
			propagation.Baggage{},
		),
		Registry: reg,
		Logger:   logger,
		tp:       tp,
		mp:       mp,
	}, nil
}

// Shutdown flushes buffered spans to the exporter and stops the providers.
// ctx bounds the flush: an unreachable collector costs at most its
// deadline. Spans and metrics recorded afterwards are dropped.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	if t.tp != nil {
		if err := t.tp.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("telemetry: shut down tracer provider: %w", err))
		}
	}
	if t.mp != nil {
		if err := t.mp.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("telemetry: shut down meter provider: %w", err))
		}
	}
	return errors.Join(errs...)
}

// MetricsHandler serves Registry in the Prometheus text format, for the
// admin address's /metrics.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.Registry, promhttp.HandlerOpts{
		// A failing collector should cost its own series, not the scrape.
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// Tracer returns a tracer of this process's provider; name is the
// instrumentation scope, by convention the importing package's path.
func (t *Telemetry) Tracer(name string) trace.Tracer {
	return t.TracerProvider.Tracer(name)
}
