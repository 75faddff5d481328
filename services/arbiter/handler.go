package arbiter

import (
	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	raftv1 "github.com/triarch-io/triarch/gen/triarch/raft/v1"
)

// handler adapts the arbiter's API to gRPC. Methods not yet implemented answer Unimplemented.
type handler struct {
	arbiterv1.UnimplementedArbiterServiceServer
	raftv1.UnimplementedRaftTransportServiceServer
}
