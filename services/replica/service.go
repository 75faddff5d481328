package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	raftv1 "github.com/triarch-io/triarch/gen/triarch/raft/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/pkg/arbiterclient"
	"github.com/triarch-io/triarch/pkg/chanlog"
	"github.com/triarch-io/triarch/pkg/grpcx"
	"github.com/triarch-io/triarch/pkg/identity"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/nodelease"
	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/pkg/raftnet"
	"github.com/triarch-io/triarch/pkg/raftstore"
	"github.com/triarch-io/triarch/pkg/telemetry"
)

// Service is a running replica: the Badger store, the multi-group raft host, the peer
// transport, the engine, the node lease, and the gRPC services over them.
type Service struct {
	*process.Process
	Engine *Engine
	Host   *multiraft.Host

	store     *raftstore.Badger
	transport *raftnet.Transport
	arbiter   *arbiterclient.Client
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	stop      sync.Once
	stopErr   error
}

// Start opens the node's store, starts the raft host and serves.
func Start(ctx context.Context, cfg Config, tel *telemetry.Telemetry) (_ *Service, err error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("replica: create --data-dir: %w", err)
	}
	store, err := raftstore.OpenBadger(cfg.DataDir, raftstore.WithLogger(tel.Logger))
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	s := &Service{store: store}
	stall := newDiskStall(cfg.DiskStallBound, time.Now, tel.Logger)
	tel.Logger.InfoContext(ctx, "store opened", "dir", cfg.DataDir, "store_id", fmt.Sprintf("%016x", store.StoreID()))
	defer func() {
		if err != nil {
			_ = s.shutdown(context.WithoutCancel(ctx))
		}
	}()
	sec, err := grpcx.NewSecurity(grpcx.SecurityConfig{Files: cfg.TLS, Self: identity.ID{Role: identity.RoleReplica, Node: cfg.NodeID}, Log: tel.Logger})
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	s.transport = raftnet.New(raftnet.Config{NodeID: cfg.NodeID, Dial: sec.Dialer(tel, identity.RoleReplica), Log: tel.Logger, Fault: cfg.TransportFault,
		Tamper: cfg.TransportTamper, Silenced: stall.Stalled}, nil)
	var disk Store = store
	if cfg.StoreFault != nil {
		disk = cfg.StoreFault(disk)
	}
	timed := stall.wrap(disk)
	s.Engine = NewEngine(EngineConfig{
		NodeID: cfg.NodeID, Store: timed, Log: tel.Logger,
		Dedup:    chanlog.Config{Window: cfg.DedupWindow, MaxIDs: cfg.DedupMaxIDs},
		LeaseTTL: cfg.LeaseTTL,
		Meter:    tel.MeterProvider.Meter("github.com/triarch-io/triarch/services/replica"),
		StoreID:  store.StoreID(),
		Space:    spaceGuard(cfg, tel.Logger),
	})
	s.Host, err = multiraft.New(multiraft.Config{
		NodeID: cfg.NodeID, Store: timed, Transport: s.transport, Applier: s.Engine, Logger: tel.Logger,
		HeartbeatTick: cfg.HeartbeatTicks, ElectionTick: 10 * cfg.HeartbeatTicks,
	})
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	s.transport.SetHost(s.Host)

	h := &handler{e: s.Engine}
	s.Process, err = process.Start(cfg.Common, tel, process.Options{
		Services: []string{
			replicav1.ReplicaService_ServiceDesc.ServiceName,
			replicav1.ReplicaControlService_ServiceDesc.ServiceName,
			raftv1.RaftTransportService_ServiceDesc.ServiceName,
		},
		Register: func(g *grpc.Server) {
			replicav1.RegisterReplicaServiceServer(g, h)
			replicav1.RegisterReplicaControlServiceServer(g, h)
			raftv1.RegisterRaftTransportServiceServer(g, s.transport.Server())
		},
		ServerOptions: sec.ServerOptions(),
	})
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	var lease Lease
	if len(cfg.Arbiters) > 0 {
		s.arbiter, err = arbiterclient.New(arbiterclient.Config{Members: cfg.Arbiters, Dial: sec.Dialer(tel, identity.RoleArbiter), Log: tel.Logger})
		if err != nil {
			return nil, fmt.Errorf("replica: %w", err)
		}
		keeper := nodelease.New(nodelease.Config{
			Arbiter: s.arbiter, NodeID: cfg.NodeID, Role: arbiterv1.NodeRole_NODE_ROLE_REPLICA,
			Address: s.Advertise(), Zone: cfg.Zone, Log: tel.Logger, StoreID: store.StoreID(),
			Peers: s.peerReachability, Healthy: stall.Healthy,
		})
		lease = keeper
		s.goRun(func() error { return keeper.Run(runCtx) })
	}
	s.Engine.Attach(s.Host, s.transport, lease)
	s.goRun(func() error {
		err := s.Host.Run(runCtx)
		if err != nil && !errors.Is(err, context.Canceled) {
			s.Fail(err)
		}
		return nil
	})
	if cfg.DiskStallBound > 0 {
		s.goRun(func() error { return watchDiskStall(runCtx, stall) })
	}
	s.goRun(func() error {
		t := time.NewTicker(cfg.TickInterval)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return nil
			case <-t.C:
				s.Host.Tick()
			}
		}
	})
	return s, nil
}

// spaceGuard is the free-space guard of the data directory, nil when off or not measurable
// here.
func spaceGuard(cfg Config, log *slog.Logger) *SpaceGuard {
	if cfg.MinFreeBytes == 0 {
		return nil
	}
	free := func() (uint64, error) { return statfsFree(cfg.DataDir) }
	if _, err := free(); err != nil {
		log.Warn("free disk space cannot be measured: appends are never refused for lack of it", "err", err)
		return nil
	}
	return NewSpaceGuard(free, cfg.MinFreeBytes, nil, log)
}

func (s *Service) goRun(f func() error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = f()
	}()
}

// peerReachability is this node's view of its peers for the arbiter's failure detection.
func (s *Service) peerReachability() []*arbiterv1.PeerReachability {
	heard := s.transport.LastHeard()
	connected := s.transport.Connected()
	now := time.Now()
	out := make([]*arbiterv1.PeerReachability, 0, len(connected))
	for id, up := range connected {
		p := &arbiterv1.PeerReachability{NodeId: id, Reachable: up}
		if at, ok := heard[id]; ok {
			p.LastContactAge = durationpb.New(now.Sub(at))
		}
		out = append(out, p)
	}
	return out
}

// Wait serves until ctx ends or the host fails, then stops within grace.
func (s *Service) Wait(ctx context.Context, grace time.Duration) error {
	return process.WaitThenStop(ctx, grace, s.Err(), s.Stop)
}

// Stop shuts the replica down; see shutdown.
func (s *Service) Stop(ctx context.Context) error {
	s.stop.Do(func() { s.stopErr = s.shutdown(ctx) })
	return s.stopErr
}

// shutdown stops the raft host first (calls in flight then fail fast as Unavailable, so the
// gateway retries elsewhere), then the transport (which also ends the peers' streams into
// this node), then the gRPC server, and finally checkpoints and closes the store.
func (s *Service) shutdown(ctx context.Context) error {
	var errs []error
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	if s.transport != nil {
		s.transport.Close()
	}
	if s.Process != nil {
		errs = append(errs, s.Process.Stop(ctx))
	}
	if s.Engine != nil && s.Host != nil {
		errs = append(errs, s.Engine.Close())
	}
	if s.arbiter != nil {
		errs = append(errs, s.arbiter.Close())
	}
	errs = append(errs, s.store.Close())
	return errors.Join(errs...)
}
