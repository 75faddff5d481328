package replica

import (
	raftv1 "github.com/triarch-io/triarch/gen/triarch/raft/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// handler adapts the replica's data plane, control plane and peer transport to gRPC. Methods
// not yet implemented answer Unimplemented.
type handler struct {
	replicav1.UnimplementedReplicaServiceServer
	replicav1.UnimplementedReplicaControlServiceServer
	raftv1.UnimplementedRaftTransportServiceServer
}
