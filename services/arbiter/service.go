package arbiter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	raftv1 "github.com/triarch-io/triarch/gen/triarch/raft/v1"
	"github.com/triarch-io/triarch/pkg/grpcx"
	"github.com/triarch-io/triarch/pkg/identity"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/pkg/raftnet"
	"github.com/triarch-io/triarch/pkg/raftstore"
	"github.com/triarch-io/triarch/pkg/telemetry"
	"github.com/triarch-io/triarch/services/arbiter/fsm"
	"github.com/triarch-io/triarch/services/arbiter/liveness"
)

// Service is a running arbiter member: its Badger store, the metadata raft group (ordinary
// elections among the members), the FSM, the leader's liveness tracker and the gRPC API.
type Service struct {
	*process.Process
	cfg Config
	log *telemetry.Telemetry

	store     *raftstore.Badger
	transport *raftnet.Transport
	host      *multiraft.Host
	fsm       *fsm.FSM
	repl      *metaApplier
	tracker   *liveness.Tracker
	now       func() time.Time
	// acked reports when each other member last acknowledged this one's leadership (the
	// transport's LastAcked), for the leader lease (leaderlease.go).
	acked func() map[uint64]time.Time

	// view is what the store held of the metadata group at start; GetMemberState answers
	// with it until the group is loaded (join.go).
	view storeView
	// loaded is set once the metadata group is loaded here; admitted once it runs as a voter
	// off probation (until then the member serves no reads and is not ready); rejoining while
	// this member waits to be given its place back with a new store (join.go).
	loaded, admitted, rejoining atomic.Bool
	// rejoins is the leader's side of RejoinMember (rejoin.go).
	rejoins *rejoins
	// dial connects to another member, with this member's transport security.
	dial func(addr string) (*grpc.ClientConn, error)

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopping chan struct{}
	stop     sync.Once
	stopErr  error
}

// Start opens the member's store, joins the metadata group and serves.
func Start(ctx context.Context, cfg Config, tel *telemetry.Telemetry) (_ *Service, err error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("arbiter: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("arbiter: create --data-dir: %w", err)
	}
	store, err := raftstore.OpenBadger(cfg.DataDir, raftstore.WithLogger(tel.Logger))
	if err != nil {
		return nil, fmt.Errorf("arbiter: %w", err)
	}
	s := &Service{cfg: cfg, log: tel, store: store, fsm: fsm.New(), now: time.Now, stopping: make(chan struct{}), rejoins: newRejoins()}
	defer func() {
		if err != nil {
			_ = s.shutdown(context.WithoutCancel(ctx))
		}
	}()
	if s.tracker, err = liveness.New(cfg.Liveness); err != nil {
		return nil, fmt.Errorf("arbiter: %w", err)
	}
	s.repl = newMetaApplier(cfg.NodeID, s.fsm)
	if err := s.restoreFromStore(); err != nil {
		return nil, err
	}
	sec, err := grpcx.NewSecurity(grpcx.SecurityConfig{Files: cfg.TLS, Self: identity.ID{Role: identity.RoleArbiter, Node: cfg.NodeID}, Log: tel.Logger})
	if err != nil {
		return nil, fmt.Errorf("arbiter: %w", err)
	}
	s.dial = sec.Dialer(tel, identity.RoleArbiter)
	s.transport = raftnet.New(raftnet.Config{NodeID: cfg.NodeID, Dial: s.dial, Log: tel.Logger}, nil)
	s.acked = s.transport.LastAcked
	s.host, err = multiraft.New(multiraft.Config{
		NodeID: cfg.NodeID, Store: store, Transport: s.transport, Applier: s.repl, Logger: tel.Logger,
		SelfElecting: true, HeartbeatTick: 1, ElectionTick: cfg.ElectionTicks,
		SnapshotEntries: cfg.SnapshotEntries,
	})
	if err != nil {
		return nil, fmt.Errorf("arbiter: %w", err)
	}
	s.repl.log = s.host
	s.transport.SetHost(s.host)

	h := &handler{s: s}
	s.Process, err = process.Start(cfg.Common, tel, process.Options{
		Services: []string{arbiterv1.ArbiterService_ServiceDesc.ServiceName, raftv1.RaftTransportService_ServiceDesc.ServiceName},
		Register: func(g *grpc.Server) {
			arbiterv1.RegisterArbiterServiceServer(g, h)
			raftv1.RegisterRaftTransportServiceServer(g, s.transport.Server())
		},
		Ready:         s.ready,
		ServerOptions: sec.ServerOptions(),
	})
	if err != nil {
		return nil, fmt.Errorf("arbiter: %w", err)
	}
	if len(s.cfg.Peers) == 0 {
		s.cfg.Peers = map[uint64]string{cfg.NodeID: s.Advertise()}
	}
	for id, addr := range s.cfg.Peers {
		s.transport.SetPeer(id, addr)
	}
	rejoining, err := s.markerExists()
	if err != nil {
		return nil, err
	}
	if rejoining && len(s.cfg.Peers) == 1 {
		// Alone, the member has nobody to rejoin: its store is the cluster's.
		s.log.Logger.WarnContext(ctx, "rejoin marker found in a single-member cluster: ignored", "marker", s.markerPath())
		if err := s.removeMarker(); err != nil {
			return nil, fmt.Errorf("arbiter: remove the rejoin marker: %w", err)
		}
		rejoining = false
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.goRun(func() {
		if err := s.host.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
			s.Fail(err)
		}
	})
	switch {
	case rejoining:
		// Restarted in the middle of a rejoin: on probation again, whatever the store holds.
		s.log.Logger.InfoContext(ctx, "a rejoin of the metadata group was in progress: rejoining again on probation",
			"marker", s.markerPath())
		if err := s.loadOnProbation(ctx); err != nil {
			return nil, err
		}
		s.goRun(func() { s.join(runCtx, &peerClients{s: s}, true) })
	case !s.view.empty || len(s.cfg.Peers) == 1:
		// The store holds the group (raft's stored configuration counts, not the voters), or
		// the cluster is this member alone.
		if err := s.host.LoadGroup(ctx, multiraft.GroupSpec{GroupID: metaGroup, Voters: s.voters()}); err != nil {
			return nil, fmt.Errorf("arbiter: load the metadata group: %w", err)
		}
		s.loaded.Store(true)
		s.admitted.Store(true)
	default:
		// An empty store: a new cluster, or this member's disk was replaced. The other members
		// tell which (join.go); until then the member serves GetMemberState and is not ready.
		// In the background, so members that start one after another can answer each other.
		s.goRun(func() { s.join(runCtx, &peerClients{s: s}, false) })
	}
	s.goRun(func() { s.tick(runCtx) })
	s.goRun(func() { s.decide(runCtx) })
	return s, nil
}

// ready is the member's readiness: a voter of the metadata group, off probation, that knows a
// leader.
func (s *Service) ready(ctx context.Context) error {
	if !s.admitted.Load() {
		if s.rejoining.Load() {
			return errors.New("rejoining the metadata group with a new store: not a voter again yet")
		}
		return errors.New("the metadata group is not loaded yet")
	}
	leader, _, err := s.repl.leader(ctx)
	if err != nil {
		return err
	}
	if leader == 0 {
		return errors.New("no arbiter leader elected")
	}
	return nil
}

// restoreFromStore rebuilds the FSM from the last snapshot on disk; raft replays the entries
// after it (Applied reports the snapshot's index).
func (s *Service) restoreFromStore() error {
	log, err := s.store.Open(metaGroup)
	if err != nil {
		return fmt.Errorf("arbiter: open the metadata log: %w", err)
	}
	if s.view, err = readStoreView(log); err != nil {
		return err
	}
	snap, err := log.Snapshot()
	if err != nil {
		return fmt.Errorf("arbiter: read the snapshot: %w", err)
	}
	return s.repl.Restore(metaGroup, snap)
}

func (s *Service) goRun(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

func (s *Service) tick(ctx context.Context) {
	t := time.NewTicker(s.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.host.Tick()
		}
	}
}

// decide is the leader's failure detector: it evaluates the leases and peer reports and
// commits node state changes as raft entries, so a new leader continues from the same state.
// A member that just became leader, or got its leader lease back, first gives every node a
// fresh lease (ResetAll): leases are not replicated, and neither a leader change nor a leader
// that could not renew for a while may declare anyone dead by itself.
func (s *Service) decide(ctx context.Context) {
	t := time.NewTicker(s.cfg.Liveness.EvaluateEvery)
	defer t.Stop()
	wasLeader := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		leader, _, err := s.repl.leader(ctx)
		now := s.now()
		// Without its leader lease the member renews nobody (Heartbeat refuses), so it must
		// not count that time against anyone either: it acts as a follower until the lease
		// is back, and then starts over with fresh leases, like a new leader.
		isLeader := err == nil && leader == s.cfg.NodeID && s.checkLeaderLease(now) == nil
		if isLeader && !wasLeader {
			s.tracker.ResetAll(now)
			s.log.Logger.InfoContext(ctx, "became arbiter leader; all leases renewed", "nodes", len(s.fsm.Nodes()))
		}
		wasLeader = isLeader
		if !isLeader {
			continue
		}
		for _, n := range s.fsm.Nodes() {
			s.tracker.Observe(n.ID, n.Liveness, now)
		}
		for _, d := range s.tracker.Evaluate(now, s.fsm.Peers) {
			pctx, cancel := context.WithTimeout(ctx, s.cfg.Liveness.LeaseTTL)
			_, err := s.repl.propose(pctx, fsm.SetNodeStateCommand(d.Node, d.State, d.Reason, now))
			cancel()
			if err != nil {
				s.log.Logger.WarnContext(ctx, "could not commit a node state decision", "node", d.Node, "state", d.State, "err", err)
				continue
			}
			s.log.Logger.InfoContext(ctx, "node state decided", "node", d.Node, "state", d.State, "reason", d.Reason)
		}
		s.tracker.Evaluated(s.now())
	}
}

// Leader returns the member this one believes leads, 0 when none.
func (s *Service) Leader(ctx context.Context) (uint64, error) {
	leader, _, err := s.repl.leader(ctx)
	return leader, err
}

// FSM exposes the member's state machine to tests in other packages (read only).
func (s *Service) FSM() *fsm.FSM { return s.fsm }

// Wait serves until ctx ends or the host fails, then stops within grace.
func (s *Service) Wait(ctx context.Context, grace time.Duration) error {
	return process.WaitThenStop(ctx, grace, s.Err(), s.Stop)
}

// Stop shuts the member down; it is safe to call more than once.
func (s *Service) Stop(ctx context.Context) error {
	s.stop.Do(func() { s.stopErr = s.shutdown(ctx) })
	return s.stopErr
}

// shutdown ends watch streams, stops the raft host and transport, then the gRPC server, and
// closes the store.
func (s *Service) shutdown(ctx context.Context) error {
	var errs []error
	close(s.stopping)
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
	errs = append(errs, s.store.Close())
	return errors.Join(errs...)
}
