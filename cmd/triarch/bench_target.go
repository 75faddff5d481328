package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/triarch-io/triarch/pkg/bench"
	"github.com/triarch-io/triarch/pkg/client"
	"github.com/triarch-io/triarch/pkg/telemetry"
	"github.com/triarch-io/triarch/services/suite"
)

// targetFlags say what the failover, hibernate and fanout scenarios measure and where their
// figures go.
type targetFlags struct {
	gateway  string
	dev      bool
	jsonPath string
}

func addTargetFlags(fs *pflag.FlagSet, f *targetFlags) {
	fs.StringVar(&f.gateway, "gateway", defaultGateway, "gateway gRPC address of the cluster to measure")
	fs.BoolVar(&f.dev, "dev", false, "start a dev suite (3 replicas) in a temp directory in this process and measure it instead of --gateway")
	fs.StringVar(&f.jsonPath, "json", "", "also write all figures as JSON to this file")
}

func (f targetFlags) validate(cmd *cobra.Command) error {
	if f.dev && cmd.Flags().Changed("gateway") {
		return errors.New("--dev and --gateway exclude each other")
	}
	return nil
}

// benchTarget is what a scenario measures: a running cluster's gateway, or a dev suite this
// process started (suite is nil for --gateway).
type benchTarget struct {
	addr  string
	suite *suite.Suite
	procs *bench.ProcCluster
	stop  func()
}

// openTarget starts the dev suite (with hibernateAfter, 0 for the suite's default) or takes
// the --gateway address as is.
func openTarget(ctx context.Context, f targetFlags, hibernateAfter time.Duration) (*benchTarget, error) {
	if !f.dev {
		return &benchTarget{addr: f.gateway, stop: func() {}}, nil
	}
	s, stop, err := startBenchSuite(ctx, hibernateAfter)
	if err != nil {
		return nil, fmt.Errorf("start the dev suite: %w", err)
	}
	return &benchTarget{addr: s.GRPCAddr(), suite: s, stop: stop}, nil
}

// gatewayParam is the target as the params record it: empty for the dev suite, whose address
// is a random loopback port.
func (t *benchTarget) gatewayParam() string {
	if t.suite != nil {
		return ""
	}
	return t.addr
}

// dialBench connects to the target's gateway with the given client options.
func dialBench(ctx context.Context, addr string, opts client.Options) (*client.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	if opts.Token == "" {
		opts.Token = os.Getenv(tokenEnv)
	}
	return client.Dial(dctx, addr, opts)
}

// progressOut is where the live progress line goes: stderr when it is a terminal, else nil (no
// line: a file or pipe would fill with \r-rewritten lines).
func progressOut(cmd *cobra.Command) io.Writer {
	if fd, ok := cmd.ErrOrStderr().(*os.File); ok && bench.IsTerminal(fd) {
		return fd
	}
	return nil
}

// benchChannelNames returns n fresh channel names for one run and their common prefix: fresh
// per run so a long-lived cluster's earlier channels do not mix in.
func benchChannelNames(n int) ([]string, string) {
	prefix := "bench-" + client.NewClientMsgID()[:8] + "-"
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprint(prefix, i)
	}
	return names, prefix
}

// startBenchSuite starts a dev suite on free loopback ports in a temp directory, its logs
// discarded; stop stops it and removes the directory. hibernateAfter 0 keeps the suite's
// default.
func startBenchSuite(ctx context.Context, hibernateAfter time.Duration) (*suite.Suite, func(), error) {
	dir, err := os.MkdirTemp("", "triarch-bench-")
	if err != nil {
		return nil, nil, err
	}
	tel, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: "triarch-bench-dev", NodeID: 1,
		LogWriter: io.Discard, LogLevel: slog.LevelError})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, nil, err
	}
	s, err := suite.Start(ctx, suite.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0",
		AdminAddr: "127.0.0.1:0", HibernateAfter: hibernateAfter}, tel)
	if err != nil {
		_ = tel.Shutdown(context.WithoutCancel(ctx))
		_ = os.RemoveAll(dir)
		return nil, nil, err
	}
	stop := func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
		defer cancel()
		_ = s.Stop(sctx)
		_ = tel.Shutdown(sctx)
		_ = os.RemoveAll(dir)
	}
	return s, stop, nil
}
