package arbiter

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	raftv1 "github.com/triarch-io/triarch/gen/triarch/raft/v1"
	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/pkg/telemetry"
)

// Service is a running arbiter member.
type Service struct {
	*process.Process
}

// Start validates cfg and starts serving.
func Start(_ context.Context, cfg Config, tel *telemetry.Telemetry) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("arbiter: %w", err)
	}
	h := &handler{}
	p, err := process.Start(cfg.Common, tel, process.Options{
		Services: []string{arbiterv1.ArbiterService_ServiceDesc.ServiceName, raftv1.RaftTransportService_ServiceDesc.ServiceName},
		Register: func(s *grpc.Server) {
			arbiterv1.RegisterArbiterServiceServer(s, h)
			raftv1.RegisterRaftTransportServiceServer(s, h)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("arbiter: %w", err)
	}
	return &Service{Process: p}, nil
}
