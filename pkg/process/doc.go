// Package process holds what every triarch service process has in common, whatever its tier:
// the flags of the contract in docs/ARCHITECTURE.md (Common), a gRPC server on --listen with the standard
// grpc.health.v1 service, the admin HTTP server on --admin-addr, and an orderly shutdown.
// Services register their handlers and readiness; process does the rest.
package process
