package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/triarch-io/triarch/pkg/tlsx"
)

// newHealthCmd checks a service's gRPC health, for container health checks: the image is
// FROM scratch, with no curl to call /healthz.
func newHealthCmd() *cobra.Command {
	var (
		addr    string
		service string
		timeout time.Duration
		files   tlsx.Files
	)
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Exit 0 if the service at --addr reports SERVING over grpc.health.v1",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			creds, err := clientCredentials(files)
			if err != nil {
				return fmt.Errorf("health: %w", err)
			}
			conn, err := grpc.NewClient(addr, creds)
			if err != nil {
				return fmt.Errorf("health: %w", err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
			if err != nil {
				return fmt.Errorf("health %s: %w", addr, err)
			}
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				return fmt.Errorf("health %s: %s", addr, resp.GetStatus())
			}
			fmt.Fprintln(cmd.OutOrStdout(), "SERVING")
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:9090", "gRPC address of the service")
	cmd.Flags().StringVar(&service, "service", "", "service name to check (empty: the whole process)")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Second, "how long to wait for the answer")
	// The same names as the services' flags, so a container's TRIARCH_TLS_* serve both.
	addTLSFlags(cmd.Flags(), &files)
	return cmd
}
