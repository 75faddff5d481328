// Package gateway is the front door: it serves the public API (triarch.v1) over gRPC and, through
// grpc-gateway with the HTTP rules of proto/triarch/v1/triarch_http.yaml, over REST/JSON. It holds
// no state: it resolves each channel's leader through the channel control tier, forwards sends
// and reads to that replica, and retries across leader changes within the caller's deadline.
//
// The REST side calls the gRPC side through a real client connection (grpc-gateway's
// RegisterTriarchServiceHandler), so interceptors, tracing and server streaming behave the same
// for both.
package gateway
