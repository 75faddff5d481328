// Package admin serves the operator endpoints every triarch process exposes on --admin-addr:
// /healthz (the process is up), /readyz (the service can do its job), /metrics (Prometheus text)
// and /debug/pprof/ (Go profiling, for finding where time goes under load).
package admin
