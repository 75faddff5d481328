package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/triarch-io/triarch/pkg/telemetry"
	"github.com/triarch-io/triarch/services/suite"
)

func newDevCmd() *cobra.Command {
	var (
		cfg       suite.Config
		logLevel  string
		logFormat string
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole suite in one process on loopback (1 arbiter, 1 channelctl, 3 replicas, the gateway)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: %w", logLevel, err)
			}
			if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
				return fmt.Errorf("create --data-dir: %w", err)
			}
			tel, err := telemetry.Setup(ctx, telemetry.Options{
				ServiceName: "triarch-dev",
				NodeID:      1,
				LogWriter:   cmd.ErrOrStderr(),
				LogLevel:    lvl,
				LogFormat:   logFormat,
			})
			if err != nil {
				return fmt.Errorf("telemetry: %w", err)
			}
			defer func() { _ = tel.Shutdown(context.WithoutCancel(ctx)) }()
			suite, err := suite.Start(ctx, cfg, tel)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "triarch dev is up\n  REST  http://%s\n  gRPC  %s\n  admin http://%s\n  data  %s\nCtrl-C stops it.\n",
				suite.HTTPAddr(), suite.GRPCAddr(), suite.AdminAddr(), cfg.DataDir)
			return suite.Wait(ctx, shutdownGrace)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&cfg.DataDir, "data-dir", "./triarch-data", "directory for all the suite's data")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:8080", "REST/JSON address of the gateway")
	fs.StringVar(&cfg.GRPCAddr, "grpc-addr", "127.0.0.1:9090", "gRPC address of the gateway")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", "127.0.0.1:9091", "admin address of the gateway (/healthz, /readyz, /metrics)")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	return cmd
}
