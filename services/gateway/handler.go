package gateway

import (
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

// handler adapts the public API to gRPC. Methods not yet implemented answer Unimplemented
// (HTTP 501 over REST).
type handler struct {
	triarchv1.UnimplementedTriarchServiceServer
}
