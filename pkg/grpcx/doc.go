// Package grpcx builds the gRPC servers and client connections of every
// triarch service, so that interceptors, stats handlers, keepalive and
// message limits are decided in one place rather than per service.
//
// Every server from NewServer and every connection from Dial is traced and
// measured through the process's telemetry.Telemetry (passed explicitly,
// never the OpenTelemetry globals), so a call that crosses gateway,
// channelctl, arbiter and replicas forms one trace. Servers turn a panicking
// handler into codes.Internal instead of a crashed node, and both ends keep
// long-lived peer streams alive and detect dead peers with keepalive pings.
//
// Transport security is one value per process, a *Security (security.go): with
// the node's --tls-* files, its server takes mutual TLS only and enforces the
// identity policy of pkg/identity on every call, and its connections present
// the node's certificate and accept only servers of the role they dial. A nil
// *Security is plaintext, as processes without the flags run.
package grpcx
