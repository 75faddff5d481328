package channelctl

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	channelctlv1 "github.com/triarch-io/triarch/gen/triarch/channelctl/v1"
	"github.com/triarch-io/triarch/pkg/arbiterclient"
	"github.com/triarch-io/triarch/pkg/grpcx"
	"github.com/triarch-io/triarch/pkg/identity"
	"github.com/triarch-io/triarch/pkg/nodelease"
	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/pkg/telemetry"
)

// Service is a running channelctl: it registers with the arbiter (which gives it slots),
// follows the arbiter's changes and runs the channels of its slots.
type Service struct {
	*process.Process
	Controller *Controller

	arbiter *arbiterclient.Client
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	stop    sync.Once
	stopErr error
}

// Start validates cfg, registers with the arbiter and serves.
func Start(ctx context.Context, cfg Config, tel *telemetry.Telemetry) (_ *Service, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("channelctl: %w", err)
	}
	if len(cfg.Arbiters) == 0 {
		return nil, errors.New("channelctl: --arbiters is required")
	}
	sec, err := grpcx.NewSecurity(grpcx.SecurityConfig{Files: cfg.TLS, Self: identity.ID{Role: identity.RoleChannelctl, Node: cfg.NodeID}, Log: tel.Logger})
	if err != nil {
		return nil, fmt.Errorf("channelctl: %w", err)
	}
	s := &Service{}
	defer func() {
		if err != nil {
			_ = s.Stop(context.WithoutCancel(ctx))
		}
	}()
	if s.arbiter, err = arbiterclient.New(arbiterclient.Config{Members: cfg.Arbiters, Dial: sec.Dialer(tel, identity.RoleArbiter), Log: tel.Logger}); err != nil {
		return nil, fmt.Errorf("channelctl: %w", err)
	}
	s.Controller = NewController(ControllerConfig{NodeID: cfg.NodeID, Arbiter: s.arbiter, Dial: sec.Dialer(tel, identity.RoleReplica), Log: tel.Logger,
		HibernateAfter: cfg.HibernateAfter, ReplaceDeadAfter: cfg.ReplaceDeadAfter,
		BalanceDelay: cfg.BalanceDelay, FailoverBudget: cfg.FailoverBudget})
	h := &handler{c: s.Controller}
	s.Process, err = process.Start(cfg.Common, tel, process.Options{
		Services:      []string{channelctlv1.ChannelControlService_ServiceDesc.ServiceName},
		Register:      func(g *grpc.Server) { channelctlv1.RegisterChannelControlServiceServer(g, h) },
		ServerOptions: sec.ServerOptions(),
		Ready: func(context.Context) error {
			select {
			case <-s.Controller.Ready():
				return nil
			default:
				return errors.New("not yet following the arbiter")
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("channelctl: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	keeper := nodelease.New(nodelease.Config{Arbiter: s.arbiter, NodeID: cfg.NodeID, Role: arbiterv1.NodeRole_NODE_ROLE_CHANNELCTL,
		Address: s.Advertise(), Log: tel.Logger})
	s.goRun(func() error { return keeper.Run(runCtx) })
	s.goRun(func() error {
		// Slots are given to registered channelctls: follow the arbiter once registered.
		select {
		case <-keeper.Registered():
		case <-runCtx.Done():
			return nil
		}
		for runCtx.Err() == nil {
			err := s.Controller.Run(runCtx)
			if err == nil {
				return nil
			}
			tel.Logger.WarnContext(runCtx, "controller could not start; retrying", "err", err)
			select {
			case <-runCtx.Done():
			case <-time.After(time.Second):
			}
		}
		return nil
	})
	return s, nil
}

func (s *Service) goRun(f func() error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := f(); err != nil {
			s.Fail(err)
		}
	}()
}

// Wait serves until ctx ends, then stops within grace.
func (s *Service) Wait(ctx context.Context, grace time.Duration) error {
	return process.WaitThenStop(ctx, grace, s.Err(), s.Stop)
}

// Stop stops the controller and the keeper, then the server.
func (s *Service) Stop(ctx context.Context) error {
	s.stop.Do(func() {
		if s.cancel != nil {
			s.cancel()
		}
		s.wg.Wait()
		var errs []error
		if s.Process != nil {
			errs = append(errs, s.Process.Stop(ctx))
		}
		if s.arbiter != nil {
			errs = append(errs, s.arbiter.Close())
		}
		s.stopErr = errors.Join(errs...)
	})
	return s.stopErr
}
