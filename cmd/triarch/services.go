package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/pkg/telemetry"
	"github.com/triarch-io/triarch/pkg/tlsx"
	"github.com/triarch-io/triarch/services/arbiter"
	"github.com/triarch-io/triarch/services/channelctl"
	"github.com/triarch-io/triarch/services/gateway"
	"github.com/triarch-io/triarch/services/replica"
)

// shutdownGrace is how long running calls get to finish on SIGINT/SIGTERM.
const shutdownGrace = 10 * time.Second

// waiter is a started service.
type waiter interface {
	Wait(ctx context.Context, grace time.Duration) error
}

// serve sets up telemetry for one service, starts it with start, and serves until ctx ends.
func serve(cmd *cobra.Command, service string, c *commonFlags,
	start func(ctx context.Context, tel *telemetry.Telemetry) (waiter, error)) error {
	ctx := cmd.Context()
	common, lvl, err := c.resolve(service)
	if err != nil {
		return err
	}
	c.Common = common
	tel, err := telemetry.Setup(ctx, telemetry.Options{
		ServiceName: "triarch-" + service,
		NodeID:      common.NodeID,
		LogWriter:   cmd.ErrOrStderr(),
		LogLevel:    lvl,
		LogFormat:   c.logFormat,
	})
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	svc, err := start(ctx, tel)
	if err == nil {
		err = svc.Wait(ctx, shutdownGrace)
		tel.Logger.Info("stopped", "err", err)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	return errors.Join(err, tel.Shutdown(sctx))
}

func newArbiterCmd() *cobra.Command {
	var (
		c            commonFlags
		peers, state string
		maxChannels  uint64
	)
	cmd := &cobra.Command{
		Use:   "arbiter",
		Short: "Run an arbiter member (tier 1: leases, placement, election decisions)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			members, err := parsePeers(peers)
			if err != nil {
				return fmt.Errorf("--peers: %w", err)
			}
			if state != "new" && state != "existing" {
				return fmt.Errorf("--initial-cluster-state: %q, want new or existing", state)
			}
			return serve(cmd, "arbiter", &c, func(ctx context.Context, tel *telemetry.Telemetry) (waiter, error) {
				return arbiter.Start(ctx, arbiter.Config{Common: c.Common, TLS: c.tls, Peers: members, Existing: state == "existing",
					MaxChannels: maxChannels}, tel)
			})
		},
	}
	addCommonFlags(cmd.Flags(), &c, "127.0.0.1:7400", "127.0.0.1:7401")
	cmd.Flags().StringVar(&peers, "peers", "", "all arbiter members as id=host:port,... including this one (empty: a single-member cluster)")
	cmd.Flags().StringVar(&state, "initial-cluster-state", "new", "new, or existing: a member with an empty data directory never bootstraps a new cluster "+
		"and waits to rejoin the existing one (set it when replacing a member's disk)")
	cmd.Flags().Uint64Var(&maxChannels, "max-channels", 0, "cap on the channels the cluster holds; creating one more answers ResourceExhausted "+
		"(429); 0: no cap. The leader's value counts: give every member the same")
	return cmd
}

func newChannelctlCmd() *cobra.Command {
	var (
		c   commonFlags
		cfg channelctl.Config
	)
	cmd := &cobra.Command{
		Use:   "channelctl",
		Short: "Run a channel controller (tier 2: channel state machines, ordered elections, hibernation)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve(cmd, "channelctl", &c, func(ctx context.Context, tel *telemetry.Telemetry) (waiter, error) {
				cfg.Common, cfg.TLS = c.Common, c.tls
				return channelctl.Start(ctx, cfg, tel)
			})
		},
	}
	addCommonFlags(cmd.Flags(), &c, "127.0.0.1:7500", "127.0.0.1:7501")
	cmd.Flags().DurationVar(&cfg.HibernateAfter, "hibernate-after", 2*time.Minute, "unload a channel from memory after it has been idle this long")
	cmd.Flags().DurationVar(&cfg.ReplaceDeadAfter, "replace-dead-after", 10*time.Minute, "give the channels of a replica dead this long a new replica elsewhere")
	return cmd
}

func newReplicaCmd() *cobra.Command {
	var (
		c   commonFlags
		cfg replica.Config
	)
	cmd := &cobra.Command{
		Use:   "replica",
		Short: "Run a replica (tier 3: one raft group per channel, logs in Badger)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve(cmd, "replica", &c, func(ctx context.Context, tel *telemetry.Telemetry) (waiter, error) {
				cfg.Common, cfg.TLS = c.Common, c.tls
				return replica.Start(ctx, cfg, tel)
			})
		},
	}
	addCommonFlags(cmd.Flags(), &c, "127.0.0.1:7600", "127.0.0.1:7601")
	cmd.Flags().StringVar(&cfg.Zone, "zone", "", "failure-domain label used to spread a channel's replicas")
	cmd.Flags().DurationVar(&cfg.DedupWindow, "dedup-window", 24*time.Hour, "how long a client_msg_id is remembered for idempotent sends, by the channel's dedup clock (the newest proposal time seen; it never moves back)")
	cmd.Flags().IntVar(&cfg.DedupMaxIDs, "dedup-max-ids", 100_000, "how many client_msg_ids per channel are remembered at most (56 bytes each per channel)")
	cmd.Flags().DurationVar(&cfg.TickInterval, "tick-interval", 100*time.Millisecond, "raft tick; only leaders are ticked (heartbeats, retransmission)")
	cmd.Flags().IntVar(&cfg.HeartbeatTicks, "heartbeat-ticks", 2, "ticks between a leader's heartbeats")
	cmd.Flags().DurationVar(&cfg.LeaseTTL, "lease-ttl", 600*time.Millisecond, "how long a leader serves without a lease renewal or quorum contact (must match the arbiter)")
	cmd.Flags().Uint64Var(&cfg.MinFreeBytes, "min-free-space", replica.DefaultMinFreeBytes, "free bytes the data directory's file system must keep: "+
		"below it appends answer ResourceExhausted (reads go on) until a quarter more is free; 0: no check")
	return cmd
}

func newGatewayCmd() *cobra.Command {
	var (
		c              commonFlags
		cfg            gateway.Config
		createChannels bool
	)
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run a gateway (the public API over gRPC and REST)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve(cmd, "gateway", &c, func(ctx context.Context, tel *telemetry.Telemetry) (waiter, error) {
				return gateway.Start(ctx, gatewayConfig(c.Common, withTLS(cfg, c.tls), createChannels), tel)
			})
		},
	}
	fs := cmd.Flags()
	addCommonFlags(fs, &c, "127.0.0.1:9090", "127.0.0.1:9091")
	// --grpc-addr names the same setting as --listen, as the gateway's users know it.
	fs.StringVar(&c.Listen, "grpc-addr", "127.0.0.1:9090", "gRPC address of the public API (same as --listen)")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:8080", "REST/JSON address of the public API")
	fs.Uint32Var(&cfg.DefaultReplication, "default-replication", 3, "replication factor of channels created by a send or by CreateChannel without one")
	fs.BoolVar(&createChannels, "create-channels", true, "create a channel on its first send; when false a send to a missing channel answers NotFound (404) "+
		"and only CreateChannel (POST /v1/channels) creates")
	fs.StringSliceVar(&cfg.Channelctls, "channelctls", nil, "comma-separated gRPC addresses of the channelctl services that resolve channels")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", gateway.DefaultRequestTimeout, "deadline of a call whose client set none, retries across leader changes included")
	fs.StringVar(&cfg.Auth.TokenFile, "auth-tokens", "", "JSON file of API tokens and their grants; callers then need \"Authorization: Bearer <token>\" "+
		"(see the README's Security section; without this and --auth-jwks every caller may do everything)")
	fs.StringVar(&cfg.Auth.JWKSFile, "auth-jwks", "", "JSON Web Key Set file whose keys sign the JWTs callers may present")
	fs.StringVar(&cfg.Auth.Issuer, "auth-jwt-issuer", "", "issuer (iss) accepted JWTs must name; required with --auth-jwks")
	fs.StringVar(&cfg.Auth.Audience, "auth-jwt-audience", "", "audience (aud) accepted JWTs must name; required with --auth-jwks")
	fs.StringVar(&cfg.Auth.GrantsClaim, "auth-jwt-grants-claim", "triarch_grants", "JWT claim holding the caller's grants")
	fs.Float64Var(&cfg.Quota.RequestsPerSecond, "rate-limit", 0, "calls per second each caller may make (the authenticated identity; every caller together without authentication); 0: no limit")
	fs.IntVar(&cfg.Quota.RequestBurst, "rate-burst", 0, "calls a caller may make at once above --rate-limit (default: one second's worth)")
	fs.Float64Var(&cfg.Quota.CreatesPerSecond, "create-rate", 0, "CreateChannel calls per second each caller may make (burst 10); 0: no limit")
	fs.IntVar(&cfg.Quota.MaxSubscriptions, "max-subscriptions", 0, "subscriptions a caller may hold open at once; 0: no limit")
	return cmd
}

// gatewayConfig is the gateway's configuration from its flags.
func gatewayConfig(common process.Common, cfg gateway.Config, createChannels bool) gateway.Config {
	cfg.Common = common
	cfg.NoImplicitCreate = !createChannels
	return cfg
}

// withTLS is cfg with the TLS files of the flags.
func withTLS(cfg gateway.Config, files tlsx.Files) gateway.Config {
	cfg.TLS = files
	return cfg
}
