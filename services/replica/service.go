package replica

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	raftv1 "github.com/triarch-io/triarch/gen/triarch/raft/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/pkg/telemetry"
)

// Service is a running replica.
type Service struct {
	*process.Process
}

// Start validates cfg and starts serving.
func Start(_ context.Context, cfg Config, tel *telemetry.Telemetry) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	h := &handler{}
	p, err := process.Start(cfg.Common, tel, process.Options{
		Services: []string{
			replicav1.ReplicaService_ServiceDesc.ServiceName,
			replicav1.ReplicaControlService_ServiceDesc.ServiceName,
			raftv1.RaftTransportService_ServiceDesc.ServiceName,
		},
		Register: func(s *grpc.Server) {
			replicav1.RegisterReplicaServiceServer(s, h)
			replicav1.RegisterReplicaControlServiceServer(s, h)
			raftv1.RegisterRaftTransportServiceServer(s, h)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	return &Service{Process: p}, nil
}
