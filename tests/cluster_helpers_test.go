package tests

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	channelctlv1 "github.com/triarch-io/triarch/gen/triarch/channelctl/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/pkg/telemetry"
	"github.com/triarch-io/triarch/services/arbiter"
	"github.com/triarch-io/triarch/services/channelctl"
	"github.com/triarch-io/triarch/services/replica"
)

// cluster is the three tiers in this process over real gRPC and Badger: one arbiter, two
// channelctls and three replicas (the gateway has its own tests).
type cluster struct {
	t            testing.TB
	arbiter      *arbiter.Service
	arbiterAddr  string
	ctls         map[uint64]*channelctl.Service
	replicas     map[uint64]*replica.Service
	replicaAddrs map[uint64]string
	replicaDirs  map[uint64]string
	hibernate    time.Duration
	// nReplicas is the number of replica nodes (default 3); replaceDeadAfter the channelctls'
	// repair timeout (default an hour: no repair during a test unless asked for).
	nReplicas        int
	replaceDeadAfter time.Duration
	failoverBudget   int // the channelctls' FailoverBudget; 0: their default
	// fault, when set, injects delay and loss between the replicas.
	fault func(to uint64) (time.Duration, bool)

	connMu sync.Mutex
	conns  map[string]*grpc.ClientConn
}

func quietTelemetry(t testing.TB, name string, node uint64) *telemetry.Telemetry {
	t.Helper()
	tel, err := telemetry.Setup(context.Background(), telemetry.Options{ServiceName: name, NodeID: node, LogWriter: logSink(t), LogLevel: logLevel()})
	require.NoError(t, err)
	return tel
}

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func startCluster(t testing.TB, hibernateAfter time.Duration, opts ...func(*cluster)) *cluster {
	t.Helper()
	c := &cluster{t: t, conns: map[string]*grpc.ClientConn{}, ctls: map[uint64]*channelctl.Service{}, replicas: map[uint64]*replica.Service{},
		replicaAddrs: map[uint64]string{}, replicaDirs: map[uint64]string{}, hibernate: hibernateAfter,
		nReplicas: 3, replaceDeadAfter: time.Hour}
	for _, o := range opts {
		o(c)
	}
	var err error
	c.arbiter, err = arbiter.Start(context.Background(), arbiter.Config{
		Common: process.Common{NodeID: 1, Listen: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", DataDir: t.TempDir()},
	}, quietTelemetry(t, "arbiter", 1))
	require.NoError(t, err)
	c.arbiterAddr = c.arbiter.Advertise()
	for id := uint64(1); id <= uint64(c.nReplicas); id++ {
		c.replicaAddrs[id] = freePort(t)
		c.replicaDirs[id] = t.TempDir()
		c.startReplica(id)
	}
	for id := uint64(1); id <= 2; id++ {
		c.startChannelctl(id)
	}
	t.Cleanup(c.stopAll)
	// Ready: every channelctl follows the arbiter and every slot has an owner.
	for _, s := range c.ctls {
		select {
		case <-s.Controller.Ready():
		case <-time.After(20 * time.Second):
			t.Fatal("channelctl never became ready")
		}
	}
	return c
}

// withReplicas starts n replica nodes instead of 3.
func withReplicas(n int) func(*cluster) { return func(c *cluster) { c.nReplicas = n } }

// withReplaceDeadAfter sets the channelctls' --replace-dead-after.
func withReplaceDeadAfter(d time.Duration) func(*cluster) {
	return func(c *cluster) { c.replaceDeadAfter = d }
}

func (c *cluster) startReplica(id uint64) {
	c.t.Helper()
	s, err := replica.Start(context.Background(), replica.Config{
		Common:      process.Common{NodeID: id, Listen: c.replicaAddrs[id], AdminAddr: "127.0.0.1:0", DataDir: c.replicaDirs[id], Arbiters: []string{c.arbiterAddr}},
		DedupWindow: time.Hour, DedupMaxIDs: 10_000, TransportFault: c.fault,
	}, quietTelemetry(c.t, "replica", id))
	require.NoError(c.t, err)
	c.replicas[id] = s
}

func (c *cluster) startChannelctl(id uint64) {
	c.t.Helper()
	s, err := channelctl.Start(context.Background(), channelctl.Config{
		Common:         process.Common{NodeID: 100 + id, Listen: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Arbiters: []string{c.arbiterAddr}},
		HibernateAfter: c.hibernate, ReplaceDeadAfter: c.replaceDeadAfter, BalanceDelay: time.Second,
		FailoverBudget: c.failoverBudget,
	}, quietTelemetry(c.t, "channelctl", id))
	require.NoError(c.t, err)
	c.ctls[id] = s
}

func stopService(t testing.TB, s interface{ Stop(context.Context) error }) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	require.NoError(t, s.Stop(ctx))
}

func (c *cluster) stopReplica(id uint64) {
	stopService(c.t, c.replicas[id])
	delete(c.replicas, id)
}

func (c *cluster) stopAll() {
	for id, s := range c.ctls {
		stopService(c.t, s)
		delete(c.ctls, id)
	}
	for id := range c.replicas {
		c.stopReplica(id)
	}
	stopService(c.t, c.arbiter)
	for _, conn := range c.conns {
		_ = conn.Close()
	}
}

// dial returns a cached client connection to addr.
func (c *cluster) dial(addr string) *grpc.ClientConn {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	if conn, ok := c.conns[addr]; ok {
		return conn
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(c.t, err)
	c.conns[addr] = conn
	return conn
}

// resolve asks the channelctls (following NotOwner) for the channel's leader.
func (c *cluster) resolve(ctx context.Context, channel string, stale uint64) (*channelctlv1.ResolveChannelResponse, error) {
	var lastErr error
	for _, s := range c.ctls {
		cl := channelctlv1.NewChannelControlServiceClient(c.dial(s.Advertise()))
		resp, err := cl.ResolveChannel(ctx, &channelctlv1.ResolveChannelRequest{ChannelId: channel, CreateIfMissing: true,
			ReplicationFactor: 3, StaleLeaderNodeId: stale})
		if err == nil {
			return resp, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// send sends one message to the channel through its leader, re-resolving across leader
// changes, as the gateway does; it returns the message's seq.
func (c *cluster) send(ctx context.Context, channel, id string) (uint64, error) {
	var stale uint64
	for {
		res, err := c.resolve(ctx, channel, stale)
		if err == nil {
			cl := replicav1.NewReplicaServiceClient(c.dial(res.GetLeaderAddress()))
			var resp *replicav1.AppendResponse
			resp, err = cl.Append(ctx, &replicav1.AppendRequest{ChannelId: channel,
				Messages: []*triarchv1.MessageInput{{ClientMsgId: id, Payload: []byte(id)}}})
			if err == nil {
				return resp.GetResults()[0].GetSeq(), nil
			}
			stale = res.GetLeaderNodeId()
		}
		if ctx.Err() != nil {
			return 0, errors.Join(err, ctx.Err())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readAll reads every committed message of the channel from its leader.
func (c *cluster) readAll(ctx context.Context, channel string) ([]*triarchv1.Message, error) {
	res, err := c.resolve(ctx, channel, 0)
	if err != nil {
		return nil, err
	}
	cl := replicav1.NewReplicaServiceClient(c.dial(res.GetLeaderAddress()))
	var out []*triarchv1.Message
	from := uint64(1)
	for {
		resp, err := cl.Read(ctx, &replicav1.ReadRequest{ChannelId: channel, FromSeq: from, Limit: 1000})
		if err != nil {
			return nil, fmt.Errorf("read %s: %w (%v)", channel, err, status.Code(err))
		}
		out = append(out, resp.GetMessages()...)
		if len(resp.GetMessages()) == 0 {
			return out, nil
		}
		from = resp.GetMessages()[len(resp.GetMessages())-1].GetSeq() + 1
	}
}

// logSink is where the services' logs go: nowhere, unless TRIARCH_TEST_LOG names a file.
func logSink(t testing.TB) io.Writer {
	path := os.Getenv("TRIARCH_TEST_LOG")
	if path == "" {
		return io.Discard
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	return f
}

func logLevel() slog.Level {
	if os.Getenv("TRIARCH_TEST_LOG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// ackLedger sends to numbered channels through the cluster and remembers, per channel, what
// was acknowledged at which seq, for requireExactlyOnce.
type ackLedger struct {
	t     *testing.T
	c     *cluster
	ctx   context.Context
	name  func(i int) string
	acked []map[uint64]string
}

func newAckLedger(t *testing.T, c *cluster, ctx context.Context, channels int, prefix string) *ackLedger {
	l := &ackLedger{t: t, c: c, ctx: ctx, name: func(i int) string { return fmt.Sprintf("%s%d", prefix, i) },
		acked: make([]map[uint64]string, channels)}
	for i := range l.acked {
		l.acked[i] = map[uint64]string{}
	}
	return l
}

// send sends one message tagged tag to channel i and records its seq.
func (l *ackLedger) send(i int, tag string) {
	l.t.Helper()
	id := fmt.Sprintf("%s-%s", l.name(i), tag)
	seq, err := l.c.send(l.ctx, l.name(i), id)
	require.NoError(l.t, err, id)
	l.acked[i][seq] = id
}

// sendAll sends one message tagged tag to every channel.
func (l *ackLedger) sendAll(tag string) {
	l.t.Helper()
	for i := range l.acked {
		l.send(i, tag)
	}
}

// verify reads every channel back: every acknowledged message, once, at its seq.
func (l *ackLedger) verify() {
	l.t.Helper()
	for i := range l.acked {
		requireExactlyOnce(l.t, l.c, l.ctx, l.name(i), l.acked[i])
	}
}
