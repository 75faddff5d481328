package grpcx

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	raftv1 "github.com/triarch-io/triarch/gen/triarch/raft/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/pkg/identity"
	"github.com/triarch-io/triarch/pkg/tlsx"
)

// frameSink is a raft transport server that counts the frames it is handed.
type frameSink struct {
	raftv1.UnimplementedRaftTransportServiceServer
	frames chan *raftv1.SendRequest
}

func (f *frameSink) Send(stream grpc.ClientStreamingServer[raftv1.SendRequest, raftv1.SendResponse]) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&raftv1.SendResponse{})
		}
		if err != nil {
			return err
		}
		f.frames <- req
	}
}

type certDir string

func (d certDir) files(id identity.ID) tlsx.Files {
	return tlsx.Files{CA: filepath.Join(string(d), tlsx.CACertFile), Cert: filepath.Join(string(d), tlsx.CertFile(id)), Key: filepath.Join(string(d), tlsx.KeyFile(id))}
}

func security(t *testing.T, d certDir, id identity.ID) *Security {
	t.Helper()
	s, err := NewSecurity(SecurityConfig{Files: d.files(id), Self: id})
	require.NoError(t, err)
	return s
}

var (
	replica1 = identity.ID{Role: identity.RoleReplica, Node: 1}
	replica2 = identity.ID{Role: identity.RoleReplica, Node: 2}
	ctl1     = identity.ID{Role: identity.RoleChannelctl, Node: 1}
	admin1   = identity.ID{Role: identity.RoleAdmin, Node: 1}
)

// secureReplica serves, as replica 1 with TLS, health, the replica control service (its
// handlers answer Unimplemented: reaching one is being let through) and a raft frame sink.
func secureReplica(t *testing.T) (certDir, string, *frameSink) {
	t.Helper()
	d := certDir(t.TempDir())
	_, err := tlsx.Issue(tlsx.IssueOptions{Dir: string(d), IDs: []identity.ID{replica1, replica2, ctl1, admin1}})
	require.NoError(t, err)
	srv := NewServer(nil, ServerOptions{}, security(t, d, replica1).ServerOptions()...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	replicav1.RegisterReplicaControlServiceServer(srv, replicav1.UnimplementedReplicaControlServiceServer{})
	sink := &frameSink{frames: make(chan *raftv1.SendRequest, 16)}
	raftv1.RegisterRaftTransportServiceServer(srv, sink)
	return d, serve(t, srv), sink
}

func dialAs(t *testing.T, d certDir, addr string, id identity.ID) *grpc.ClientConn {
	t.Helper()
	conn, err := Dial(addr, nil, security(t, d, id).DialOption(identity.RoleReplica))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestTLSServerRefusesPlaintext(t *testing.T) {
	_, addr, _ := secureReplica(t)
	conn, err := Dial(addr, nil) // plaintext
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	require.Equal(t, codes.Unavailable, status.Code(err), "a plaintext client must not get through: %v", err)
	_, err = replicav1.NewReplicaControlServiceClient(conn).Campaign(ctx, &replicav1.CampaignRequest{})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
}

func TestTLSServerEnforcesRoles(t *testing.T) {
	d, addr, _ := secureReplica(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The channelctl gets through to the handler; a replica and an admin do not.
	_, err := replicav1.NewReplicaControlServiceClient(dialAs(t, d, addr, ctl1)).ChangeReplicas(ctx, &replicav1.ChangeReplicasRequest{})
	require.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
	for _, id := range []identity.ID{replica2, admin1} {
		_, err := replicav1.NewReplicaControlServiceClient(dialAs(t, d, addr, id)).ChangeReplicas(ctx, &replicav1.ChangeReplicasRequest{})
		require.Equal(t, codes.PermissionDenied, status.Code(err), "%s: %v", id, err)
	}
	// Health answers any certificate of the cluster.
	resp, err := healthpb.NewHealthClient(dialAs(t, d, addr, replica2)).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())
}

// Raft frames pass only as the node the certificate names: the frame naming another node
// ends the stream with PermissionDenied, after the frames before it went through.
func TestTLSServerChecksRaftFrameSender(t *testing.T) {
	d, addr, sink := secureReplica(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := raftv1.NewRaftTransportServiceClient(dialAs(t, d, addr, replica2)).Send(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&raftv1.SendRequest{FromNodeId: 2, ToNodeId: 1}))
	select {
	case f := <-sink.frames:
		require.Equal(t, uint64(2), f.GetFromNodeId())
	case <-ctx.Done():
		t.Fatal("the genuine frame was not delivered")
	}
	_ = stream.Send(&raftv1.SendRequest{FromNodeId: 3, ToNodeId: 1}) // may fail once the server has refused
	_, err = stream.CloseAndRecv()
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Empty(t, sink.frames, "the forged frame reached the transport")

	// An admin certificate sends no raft frames at all.
	stream, err = raftv1.NewRaftTransportServiceClient(dialAs(t, d, addr, admin1)).Send(ctx)
	require.NoError(t, err)
	_ = stream.Send(&raftv1.SendRequest{FromNodeId: 1, ToNodeId: 1})
	_, err = stream.CloseAndRecv()
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
}

func TestTLSClientChecksTheServersRole(t *testing.T) {
	d, addr, _ := secureReplica(t)
	conn, err := Dial(addr, nil, security(t, d, ctl1).DialOption(identity.RoleArbiter)) // expects an arbiter there
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "want a [arbiter]")
}

func TestNewSecurity(t *testing.T) {
	d := certDir(t.TempDir())
	_, err := tlsx.Issue(tlsx.IssueOptions{Dir: string(d), IDs: []identity.ID{replica1}})
	require.NoError(t, err)
	s, err := NewSecurity(SecurityConfig{Self: replica1})
	require.NoError(t, err)
	require.Nil(t, s, "no files: plaintext")
	require.False(t, s.Enabled())
	require.Empty(t, s.ServerOptions())

	_, err = NewSecurity(SecurityConfig{Files: d.files(replica1), Self: replica2})
	require.ErrorContains(t, err, "names spiffe://triarch/replica/1", "a node may not run with another node's certificate")
	_, err = NewSecurity(SecurityConfig{Files: tlsx.Files{CA: d.files(replica1).CA}, Self: replica1})
	require.ErrorContains(t, err, "--tls-cert")
}
