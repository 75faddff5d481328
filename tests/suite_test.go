package tests

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/triarch-io/triarch/internal/testutil"
	"github.com/triarch-io/triarch/services/suite"
)

// Every process of the suite serves gRPC health for itself and its services, and the admin
// endpoints; the suite stops cleanly.
func TestSuiteServesHealthEverywhere(t *testing.T) {
	ctx := context.Background()
	tel := testutil.Telemetry(t, "triarch-test", 1)
	s, err := suite.Start(ctx, suite.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0",
		GRPCAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0"}, tel)
	require.NoError(t, err)

	type proc struct {
		grpcAddr, adminAddr string
		services            []string
	}
	procs := []proc{
		{s.Arbiter.Addr(), s.Arbiter.AdminAddr().String(), []string{"triarch.arbiter.v1.ArbiterService", "triarch.raft.v1.RaftTransportService"}},
		{s.Channelctl.Addr(), s.Channelctl.AdminAddr().String(), []string{"triarch.channelctl.v1.ChannelControlService"}},
		{s.Gateway.Addr(), s.Gateway.AdminAddr().String(), []string{"triarch.v1.TriarchService"}},
	}
	require.Len(t, s.Replicas, suite.Replicas)
	for _, r := range s.Replicas {
		procs = append(procs, proc{r.Addr(), r.AdminAddr().String(), []string{
			"triarch.replica.v1.ReplicaService", "triarch.replica.v1.ReplicaControlService", "triarch.raft.v1.RaftTransportService"}})
	}
	for _, p := range procs {
		conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		require.NoError(t, err)
		hc := healthpb.NewHealthClient(conn)
		for _, svc := range append([]string{""}, p.services...) {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{Service: svc})
			cancel()
			require.NoError(t, err, "%s %q", p.grpcAddr, svc)
			require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus(), svc)
		}
		// A service name nobody registered is NOT_FOUND: health is per service, not blanket.
		_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "triarch.nope.v1.Nope"})
		require.Error(t, err)
		require.NoError(t, conn.Close())

		resp, err := http.Get("http://" + p.adminAddr + "/metrics")
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.NoError(t, resp.Body.Close())
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, s.Stop(sctx))
}
