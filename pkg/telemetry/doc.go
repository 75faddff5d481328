// Package telemetry sets up tracing, metrics and logging for one triarch
// process.
//
// Every process of every tier (arbiter, channelctl, replica, gateway, and
// `triarch dev`, which hosts them all) calls Setup exactly once at start and
// Shutdown once on exit, then passes the returned *Telemetry down explicitly:
// its providers and propagator go to the gRPC stats handlers (see
// pkg/grpcx) and the HTTP middleware, its Registry is served on the admin
// address as /metrics, and its Logger is the one *slog.Logger of the process.
//
// Nothing here touches OpenTelemetry's or slog's global state. A process
// that hosts several services therefore cannot have one service's
// configuration leak into another's, and tests can run many Telemetry
// instances side by side.
//
// Configuration follows the standard OTEL_* variables rather than flags, so
// the suite plugs into any collector the way other OpenTelemetry software
// does: OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (no
// endpoint means spans are recorded but never exported),
// OTEL_EXPORTER_OTLP_INSECURE, OTEL_EXPORTER_OTLP_HEADERS,
// OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER and
// OTEL_TRACES_SAMPLER_ARG (unset, one trace in a hundred started here is
// sampled, and every trace a caller sampled: DefaultSampleRatio). Those
// variables are read through Options.Getenv
// so tests can inject them; the remaining exporter settings (certificates,
// compression, timeout) are read by the OTLP exporter from the real
// environment.
package telemetry
