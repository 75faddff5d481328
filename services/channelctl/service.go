package channelctl

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	channelctlv1 "github.com/triarch-io/triarch/gen/triarch/channelctl/v1"
	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/pkg/telemetry"
)

// Service is a running channelctl.
type Service struct {
	*process.Process
}

// Start validates cfg and starts serving.
func Start(_ context.Context, cfg Config, tel *telemetry.Telemetry) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("channelctl: %w", err)
	}
	h := &handler{}
	p, err := process.Start(cfg.Common, tel, process.Options{
		Services: []string{channelctlv1.ChannelControlService_ServiceDesc.ServiceName},
		Register: func(s *grpc.Server) { channelctlv1.RegisterChannelControlServiceServer(s, h) },
	})
	if err != nil {
		return nil, fmt.Errorf("channelctl: %w", err)
	}
	return &Service{Process: p}, nil
}
