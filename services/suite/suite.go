package suite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/pkg/telemetry"
	"github.com/triarch-io/triarch/services/arbiter"
	"github.com/triarch-io/triarch/services/channelctl"
	"github.com/triarch-io/triarch/services/gateway"
	"github.com/triarch-io/triarch/services/replica"
)

// Replicas is the number of replica nodes of the suite.
const Replicas = 3

// Config says where the suite keeps its data and where the gateway listens. Internal services
// listen on free loopback ports.
type Config struct {
	DataDir   string
	HTTPAddr  string
	GRPCAddr  string
	AdminAddr string
	// HibernateAfter is the channelctl's idle time before a channel hibernates (2 min if 0).
	HibernateAfter time.Duration
}

// Suite is the running suite.
type Suite struct {
	Arbiter    *arbiter.Service
	Channelctl *channelctl.Service
	Replicas   []*replica.Service
	Gateway    *gateway.Service
}

// loopback is an internal service's address: any free port.
const loopback = "127.0.0.1:0"

// withLogger gives a service its own logger attributes in a shared process.
func withLogger(tel *telemetry.Telemetry, service string, node uint64) *telemetry.Telemetry {
	t := *tel
	t.Logger = tel.Logger.With("service", service, "node_id", node)
	return &t
}

// Start boots the services in dependency order: the arbiter first, since all others find it by
// its address.
func Start(ctx context.Context, cfg Config, tel *telemetry.Telemetry) (s *Suite, err error) {
	if cfg.HibernateAfter <= 0 {
		cfg.HibernateAfter = 2 * time.Minute
	}
	s = &Suite{}
	defer func() {
		if err != nil {
			_ = s.Stop(context.WithoutCancel(ctx))
		}
	}()
	common := func(node uint64, dir string) process.Common {
		c := process.Common{NodeID: node, Listen: loopback, AdminAddr: loopback}
		if dir != "" {
			c.DataDir = filepath.Join(cfg.DataDir, dir)
		}
		if s.Arbiter != nil {
			c.Arbiters = []string{s.Arbiter.Advertise()}
		}
		return c
	}
	if s.Arbiter, err = arbiter.Start(ctx, arbiter.Config{Common: common(1, "arbiter-1")},
		withLogger(tel, "arbiter", 1)); err != nil {
		return s, err
	}
	if s.Channelctl, err = channelctl.Start(ctx, channelctl.Config{
		Common: common(101, ""), HibernateAfter: cfg.HibernateAfter, ReplaceDeadAfter: 10 * time.Minute,
	}, withLogger(tel, "channelctl", 101)); err != nil {
		return s, err
	}
	for i := uint64(1); i <= Replicas; i++ {
		r, err := replica.Start(ctx, replica.Config{
			Common: common(i, fmt.Sprintf("replica-%d", i)), DedupWindow: 24 * time.Hour, DedupMaxIDs: 100_000,
			MinFreeBytes: replica.DefaultMinFreeBytes,
		}, withLogger(tel, "replica", i))
		if err != nil {
			return s, err
		}
		s.Replicas = append(s.Replicas, r)
	}
	if err := s.waitFormed(ctx); err != nil {
		return s, err
	}
	gc := common(1, "")
	gc.Listen, gc.AdminAddr = cfg.GRPCAddr, cfg.AdminAddr
	s.Gateway, err = gateway.Start(ctx, gateway.Config{Common: gc, HTTPAddr: cfg.HTTPAddr, DefaultReplication: Replicas,
		Channelctls: []string{s.Channelctl.Advertise()}}, withLogger(tel, "gateway", 1))
	return s, err
}

// waitFormed waits until every replica has registered with the arbiter and the channelctl
// follows it, so the first request finds a whole cluster, not a half-started one.
func (s *Suite) waitFormed(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		alive := 0
		for _, n := range s.Arbiter.FSM().Nodes() {
			if n.Role == arbiterv1.NodeRole_NODE_ROLE_REPLICA && n.Liveness == arbiterv1.NodeState_NODE_STATE_ALIVE {
				alive++
			}
		}
		select {
		case <-s.Channelctl.Controller.Ready():
			if alive >= Replicas {
				return nil
			}
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("suite: the cluster did not form within 30s (%d of %d replicas registered)", alive, Replicas)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// HTTPAddr is the gateway's REST address.
func (s *Suite) HTTPAddr() string { return s.Gateway.HTTPAddr() }

// GRPCAddr is the gateway's gRPC address.
func (s *Suite) GRPCAddr() string { return s.Gateway.Addr() }

// AdminAddr is the gateway's admin address.
func (s *Suite) AdminAddr() string { return s.Gateway.AdminAddr().String() }

// Wait serves until ctx ends, then stops everything within grace.
func (s *Suite) Wait(ctx context.Context, grace time.Duration) error {
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	return s.Stop(sctx)
}

// Stop stops the services in reverse dependency order: clients of a tier stop before it.
func (s *Suite) Stop(ctx context.Context) error {
	var errs []error
	if s.Gateway != nil {
		errs = append(errs, s.Gateway.Stop(ctx))
	}
	for _, r := range s.Replicas {
		errs = append(errs, r.Stop(ctx))
	}
	if s.Channelctl != nil {
		errs = append(errs, s.Channelctl.Stop(ctx))
	}
	if s.Arbiter != nil {
		errs = append(errs, s.Arbiter.Stop(ctx))
	}
	return errors.Join(errs...)
}

// ReplicaAdminAddrs are the replicas' admin addresses (/metrics), in node id order (the
// replica at index i is node i+1). In the dev suite they all serve the one process's metrics.
func (s *Suite) ReplicaAdminAddrs() []string {
	out := make([]string, len(s.Replicas))
	for i, r := range s.Replicas {
		out[i] = r.AdminAddr().String()
	}
	return out
}

// StopReplica stops replica node (1..Replicas) as a crash would look to the rest of the
// cluster: it stops heartbeating and its connections close, without handing anything over.
// The failover benchmark uses it. Stop later skips it (a replica stops once).
func (s *Suite) StopReplica(ctx context.Context, node uint64) error {
	if node < 1 || node > uint64(len(s.Replicas)) {
		return fmt.Errorf("suite: no replica node %d (have 1..%d)", node, len(s.Replicas))
	}
	if err := s.Replicas[node-1].Stop(ctx); err != nil {
		return fmt.Errorf("suite: stop replica %d: %w", node, err)
	}
	return nil
}
