package testcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/internal/testutil"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/services/arbiter"
	"github.com/triarch-io/triarch/services/channelctl"
	"github.com/triarch-io/triarch/services/gateway"
	"github.com/triarch-io/triarch/services/replica"
)

// Kind is a node's service.
type Kind int

const (
	KindArbiter Kind = iota
	KindChannelctl
	KindReplica
	KindGateway
)

func (k Kind) String() string {
	return [...]string{"arbiter", "channelctl", "replica", "gateway"}[k]
}

// ChannelctlIDBase is added to a channelctl's index (1..n) to make its node id.
const ChannelctlIDBase = 100

// Generous: a loaded CI machine under -race starts a Badger store in seconds, not millis.
const (
	formTimeout = 2 * time.Minute
	stopTimeout = 20 * time.Second
)

type key struct {
	kind Kind
	id   uint64
}

// node is one service instance; its addresses and directory survive restarts.
type node struct {
	kind  Kind
	id    uint64
	addr  string // gRPC; "" until the first in-process start binds one
	admin string
	http  string // the gateway's REST address
	dir   string
	// disk is the replica's lossy disk (LossyDisks()); nil otherwise.
	disk *disk

	running bool
	// In process: the service. In process mode: the process.
	svc  interface{ Stop(context.Context) error }
	proc *proc
	runs int
}

// Cluster is a running cluster; see the package documentation.
type Cluster struct {
	t   testing.TB
	cfg config
	bin string
	// gwCtls are the channelctl addresses the gateway resolves through.
	gwCtls []string
	root   string
	// logs holds the processes' logs (process mode).
	logs string

	fault  atomic.Pointer[FaultFunc]
	tamper atomic.Pointer[TamperFunc]
	// net is the Netns() cluster's network (nil otherwise).
	net *netns

	mu    sync.Mutex
	nodes map[key]*node

	connMu sync.Mutex
	conns  map[string]*grpc.ClientConn
}

// Start starts a cluster of the shape opts give and waits until it has formed; everything
// stops when the test ends.
func Start(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	cfg := defaults()
	for _, o := range opts {
		o(&cfg)
	}
	// Every directory of the cluster lives under one t.TempDir() made before stopAll is
	// registered: cleanups run last-in first-out, and a directory removed under a running
	// node leaves Badger retrying its flush forever, so Stop would never return.
	c := &Cluster{t: t, cfg: cfg, root: t.TempDir(), nodes: map[key]*node{}, conns: map[string]*grpc.ClientConn{}}
	if cfg.processes {
		require.Zero(t, cfg.failoverBudget, "testcluster: the triarch binary has no failover budget flag")
		c.bin = cfg.binary
		if c.bin == "" {
			c.bin = BuildTriarch(t)
		}
		c.logs = c.mkdir("logs")
		if env := os.Getenv(testutil.LogEnv); env != "" {
			// The processes' logs outlive the test next to the in-process services' log.
			dir, err := os.MkdirTemp(filepath.Dir(env), "triarch-process-logs-")
			require.NoError(t, err)
			c.logs = dir
			t.Logf("process logs in %s", dir)
		}
	}
	if cfg.netns {
		// Made before stopAll is registered, so removed after the nodes stopped.
		c.net = newNetns(t)
	}
	// Registered before stopAll, so run after it: the disks are unmounted once nothing uses them.
	t.Cleanup(c.unmountDisks)
	t.Cleanup(c.stopAll)
	add := func(kind Kind, id uint64) *node {
		n := &node{kind: kind, id: id}
		// Channelctls keep nothing, but the binary defaults --data-dir to a path under the
		// working directory: a process gets a directory of its own all the same.
		if cfg.processes || kind != KindChannelctl {
			n.dir = c.mkdir(fmt.Sprintf("%s-%d", kind, id))
		}
		if cfg.lossy && kind == KindReplica {
			n.disk = &disk{backing: c.mkdir(fmt.Sprintf("%s-%d.disk", kind, id))}
		}
		// Processes and raft peers need their addresses before they listen; in process, a node
		// binds port 0 and keeps what it got for its restarts.
		if cfg.netns {
			// A namespace of its own: its ports are its own too.
			c.attach(n)
			c.nodes[key{kind, id}] = n
			return n
		}
		if cfg.processes || (kind == KindArbiter && cfg.arbiters > 1) {
			n.addr = testutil.FreeAddr(t)
		}
		if cfg.processes {
			n.admin = testutil.FreeAddr(t)
			if kind == KindGateway {
				n.http = testutil.FreeAddr(t)
			}
		}
		c.nodes[key{kind, id}] = n
		return n
	}
	for id := uint64(1); id <= uint64(cfg.arbiters); id++ {
		add(KindArbiter, id)
	}
	for id := uint64(1); id <= uint64(cfg.replicas); id++ {
		add(KindReplica, id)
	}
	for i := uint64(1); i <= uint64(cfg.channelctls); i++ {
		add(KindChannelctl, ChannelctlIDBase+i)
	}
	// Arbiter members are ready only together (a leader needs a quorum), and the other tiers
	// look for the arbiter's address: members first, all at once, then the rest at once.
	c.startAll(KindArbiter)
	c.startAll(KindReplica, KindChannelctl)
	c.waitFormed()
	if cfg.gateway {
		c.StartGateway(c.Addrs(KindChannelctl)...)
	}
	return c
}

// StartGateway starts the cluster's gateway, resolving channels through channelctls (a fake's
// address, or the cluster's own), and waits until it is ready.
func (c *Cluster) StartGateway(channelctls ...string) {
	c.t.Helper()
	require.Empty(c.t, c.IDs(KindGateway), "testcluster: the gateway was started already")
	c.mu.Lock()
	n := &node{kind: KindGateway, id: 1}
	if c.cfg.processes {
		n.addr, n.admin, n.http = testutil.FreeAddr(c.t), testutil.FreeAddr(c.t), testutil.FreeAddr(c.t)
		n.dir = c.mkdir("gateway-1")
	}
	if c.net != nil {
		c.attach(n)
	}
	c.nodes[key{KindGateway, 1}] = n
	c.gwCtls = slices.Clone(channelctls)
	c.mu.Unlock()
	c.start(n)
}

// attach puts a node of a Netns() cluster in its namespace, on its address there.
func (c *Cluster) attach(n *node) {
	c.t.Helper()
	ip := c.net.attach(key{n.kind, n.id}).String()
	n.addr, n.admin = net.JoinHostPort(ip, "7000"), net.JoinHostPort(ip, "7001")
	if n.kind == KindGateway {
		n.http = net.JoinHostPort(ip, "7002")
	}
}

func (c *Cluster) mkdir(name string) string {
	c.t.Helper()
	dir := filepath.Join(c.root, name)
	require.NoError(c.t, os.Mkdir(dir, 0o755))
	return dir
}

func (c *Cluster) node(kind Kind, id uint64) *node {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[key{kind, id}]
	if n == nil {
		c.t.Fatalf("testcluster: no %s %d in this cluster", kind, id)
	}
	return n
}

// IDs are the node ids of a kind, running or not, in order.
func (c *Cluster) IDs(kind Kind) []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []uint64
	for k := range c.nodes {
		if k.kind == kind {
			out = append(out, k.id)
		}
	}
	slices.Sort(out)
	return out
}

// Running are the node ids of a kind that run now, in order.
func (c *Cluster) Running(kind Kind) []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []uint64
	for k, n := range c.nodes {
		if k.kind == kind && n.running {
			out = append(out, k.id)
		}
	}
	slices.Sort(out)
	return out
}

// Logs is the directory of the processes' logs, one file per node and run (process mode; ""
// in process). It is removed with the test's temporary directory unless TRIARCH_TEST_LOG is
// set: a test that keeps its evidence copies it out.
func (c *Cluster) Logs() string { return c.logs }

// Addr is a node's gRPC address (the same across restarts).
func (c *Cluster) Addr(kind Kind, id uint64) string {
	n := c.node(kind, id)
	c.mu.Lock()
	defer c.mu.Unlock()
	return n.addr
}

// AdminAddr is a node's admin address (/readyz, /metrics); in process it can change across a
// restart.
func (c *Cluster) AdminAddr(kind Kind, id uint64) string {
	n := c.node(kind, id)
	c.mu.Lock()
	defer c.mu.Unlock()
	return n.admin
}

// Dir is a node's data directory (the same across restarts; "" for in-process channelctls and
// gateways, which keep nothing).
func (c *Cluster) Dir(kind Kind, id uint64) string { return c.node(kind, id).dir }

// Addrs are the gRPC addresses of every node of a kind, running or not, in id order.
func (c *Cluster) Addrs(kind Kind) []string {
	var out []string
	for _, id := range c.IDs(kind) {
		out = append(out, c.Addr(kind, id))
	}
	return out
}

// GatewayAddr and GatewayHTTPAddr are the gateway's gRPC and REST addresses.
func (c *Cluster) GatewayAddr() string { return c.Addr(KindGateway, 1) }

func (c *Cluster) GatewayHTTPAddr() string {
	n := c.node(KindGateway, 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	return n.http
}

// service returns the in-process service of a running node, or nil when it is stopped or
// there is no such node (as a map lookup would: a slot's owner may be no channelctl at all).
func (c *Cluster) service(kind Kind, id uint64) any {
	c.t.Helper()
	if c.cfg.processes {
		c.t.Fatalf("testcluster: %s %d runs as a process; its service is not in this one", kind, id)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[key{kind, id}]
	if n == nil || !n.running {
		return nil
	}
	return n.svc
}

// Arbiter is arbiter member id's service (nil while stopped); in process only.
func (c *Cluster) Arbiter(id uint64) *arbiter.Service {
	s, _ := c.service(KindArbiter, id).(*arbiter.Service)
	return s
}

// Channelctl is channelctl id's service (nil while stopped); in process only.
func (c *Cluster) Channelctl(id uint64) *channelctl.Service {
	s, _ := c.service(KindChannelctl, id).(*channelctl.Service)
	return s
}

// Replica is replica id's service (nil while stopped); in process only.
func (c *Cluster) Replica(id uint64) *replica.Service {
	s, _ := c.service(KindReplica, id).(*replica.Service)
	return s
}

// Gateway is the gateway's service (nil while stopped); in process only.
func (c *Cluster) Gateway() *gateway.Service {
	s, _ := c.service(KindGateway, 1).(*gateway.Service)
	return s
}

// Replicas are the running replicas' services by node id; in process only.
func (c *Cluster) Replicas() map[uint64]*replica.Service {
	out := map[uint64]*replica.Service{}
	for _, id := range c.Running(KindReplica) {
		if s := c.Replica(id); s != nil {
			out[id] = s
		}
	}
	return out
}

// Channelctls are the running channelctls' services by node id; in process only.
func (c *Cluster) Channelctls() map[uint64]*channelctl.Service {
	out := map[uint64]*channelctl.Service{}
	for _, id := range c.Running(KindChannelctl) {
		if s := c.Channelctl(id); s != nil {
			out[id] = s
		}
	}
	return out
}

func (c *Cluster) arbiterAddrs() []string {
	var out []string
	for k, n := range c.nodes {
		if k.kind == KindArbiter {
			out = append(out, n.addr)
		}
	}
	slices.Sort(out)
	return out
}

// peers is the arbiters' member map; nil for a single member, which then needs none.
func (c *Cluster) peers() map[uint64]string {
	if c.cfg.arbiters < 2 {
		return nil
	}
	out := map[uint64]string{}
	for k, n := range c.nodes {
		if k.kind == KindArbiter {
			out[k.id] = n.addr
		}
	}
	return out
}

// start starts a stopped node and waits until it answers /readyz.
func (c *Cluster) start(n *node) {
	c.t.Helper()
	c.launch(n)
	c.waitReady(n)
}

// startAll starts every node of the kinds, then waits until they are all ready.
func (c *Cluster) startAll(kinds ...Kind) {
	c.t.Helper()
	var started []*node
	for _, kind := range kinds {
		for _, id := range c.IDs(kind) {
			n := c.node(kind, id)
			c.launch(n)
			started = append(started, n)
		}
	}
	for _, n := range started {
		c.waitReady(n)
	}
}

func (c *Cluster) launch(n *node) {
	c.t.Helper()
	c.mu.Lock()
	running := n.running
	c.mu.Unlock()
	require.False(c.t, running, "testcluster: %s %d is running", n.kind, n.id)
	if c.cfg.processes {
		c.mountDisk(n)
		c.startProcess(n)
	} else {
		c.startInProcess(n)
	}
}

func (c *Cluster) startInProcess(n *node) {
	c.t.Helper()
	c.mu.Lock()
	listen := n.addr
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	common := process.Common{NodeID: n.id, Listen: listen, AdminAddr: "127.0.0.1:0", DataDir: n.dir, Arbiters: c.arbiterAddrs()}
	peers := c.peers()
	c.mu.Unlock()
	ctx := context.Background()
	tel := testutil.Telemetry(c.t, n.kind.String(), n.id)
	var (
		svc interface {
			Stop(context.Context) error
			Advertise() string
		}
		err      error
		restAddr string
	)
	switch n.kind {
	case KindArbiter:
		common.Arbiters = nil
		svc, err = arbiter.Start(ctx, arbiter.Config{Common: common, Peers: peers}, tel)
	case KindChannelctl:
		svc, err = channelctl.Start(ctx, channelctl.Config{
			Common: common, HibernateAfter: c.cfg.hibernateAfter, ReplaceDeadAfter: c.cfg.replaceDeadAfter,
			BalanceDelay: c.cfg.balanceDelay, FailoverBudget: c.cfg.failoverBudget,
		}, tel)
	case KindReplica:
		id := n.id
		svc, err = replica.Start(ctx, replica.Config{
			Common: common, DedupWindow: c.cfg.dedupWindow, DedupMaxIDs: c.cfg.dedupMaxIDs, TickInterval: c.cfg.replicaTick,
			TransportFault: func(to uint64) (time.Duration, bool) {
				if f := c.fault.Load(); f != nil {
					return (*f)(id, to)
				}
				return 0, false
			},
			TransportTamper: func(to uint64, env multiraft.Envelope) multiraft.Envelope {
				if f := c.tamper.Load(); f != nil {
					return (*f)(id, to, env)
				}
				return env
			},
		}, tel)
	case KindGateway:
		httpAddr := n.http
		if httpAddr == "" {
			httpAddr = "127.0.0.1:0"
		}
		var g *gateway.Service
		g, err = gateway.Start(ctx, gateway.Config{Common: common, HTTPAddr: httpAddr,
			DefaultReplication: c.cfg.replication, Channelctls: c.gwCtls}, tel)
		if err == nil {
			svc, restAddr = g, g.HTTPAddr()
		}
	}
	require.NoError(c.t, err, "start %s %d", n.kind, n.id)
	c.mu.Lock()
	defer c.mu.Unlock()
	n.svc, n.running = svc, true
	n.addr = svc.Advertise()
	n.admin = svc.(interface{ AdminAddr() net.Addr }).AdminAddr().String()
	if restAddr != "" {
		n.http = restAddr
	}
}

// waitReady polls the node's /readyz: what a load balancer would wait for.
func (c *Cluster) waitReady(n *node) {
	c.t.Helper()
	addr := c.AdminAddr(n.kind, n.id)
	var last string
	ok := assertEventually(func() bool {
		if n.proc != nil {
			select {
			case <-n.proc.exited:
				return true // reported below
			default:
			}
		}
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			last = err.Error()
			return false
		}
		defer resp.Body.Close()
		b := make([]byte, 512)
		k, _ := resp.Body.Read(b)
		last = strings.TrimSpace(string(b[:k]))
		return resp.StatusCode == http.StatusOK
	})
	if n.proc != nil {
		select {
		case <-n.proc.exited:
			c.dumpLog(n)
			c.t.Fatalf("testcluster: %s %d exited during start", n.kind, n.id)
		default:
		}
	}
	if !ok {
		c.dumpLog(n)
		c.t.Fatalf("testcluster: %s %d not ready within %v: %s", n.kind, n.id, formTimeout, last)
	}
}

// assertEventually polls cond every 20ms until it holds or formTimeout passes.
func assertEventually(cond func() bool) bool {
	deadline := time.Now().Add(formTimeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitFormed waits until every replica is registered alive with the arbiter: a channel created
// before then would be placed on fewer replicas than the test means.
func (c *Cluster) waitFormed() {
	c.t.Helper()
	if c.cfg.arbiters == 0 || c.cfg.replicas == 0 {
		return
	}
	var last error
	ok := assertEventually(func() bool {
		alive, err := c.aliveReplicas()
		last = err
		return err == nil && alive >= c.cfg.replicas
	})
	if !ok {
		alive, _ := c.aliveReplicas()
		c.t.Fatalf("testcluster: %d of %d replicas registered alive within %v (last error: %v)", alive, c.cfg.replicas, formTimeout, last)
	}
}

// aliveReplicas counts the replicas the arbiter (any member that answers) holds alive.
func (c *Cluster) aliveReplicas() (int, error) {
	var errs []error
	for _, addr := range c.Addrs(KindArbiter) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := arbiterv1.NewArbiterServiceClient(c.Dial(addr)).GetClusterStatus(ctx, &arbiterv1.GetClusterStatusRequest{})
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		alive := 0
		for _, n := range resp.GetNodes() {
			if n.GetRole() == arbiterv1.NodeRole_NODE_ROLE_REPLICA && n.GetState() == arbiterv1.NodeState_NODE_STATE_ALIVE {
				alive++
			}
		}
		return alive, nil
	}
	return 0, errors.Join(errs...)
}

// Dial returns a client connection to addr, cached for the cluster's lifetime.
func (c *Cluster) Dial(addr string) *grpc.ClientConn {
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

// Stop stops a node gracefully (in process: its Stop; a process: SIGTERM), as an operator
// would; it may be restarted.
func (c *Cluster) Stop(kind Kind, id uint64) {
	c.t.Helper()
	require.NoError(c.t, c.StopErr(kind, id))
}

// StopErr is Stop for use off the test goroutine.
func (c *Cluster) StopErr(kind Kind, id uint64) error {
	c.mu.Lock()
	n := c.nodes[key{kind, id}]
	if n == nil || !n.running {
		c.mu.Unlock()
		return nil
	}
	n.running = false
	svc, p := n.svc, n.proc
	c.mu.Unlock()
	if p != nil {
		return p.terminate()
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := svc.Stop(ctx); err != nil {
		return fmt.Errorf("stop %s %d: %w", kind, id, err)
	}
	return nil
}

// Kill ends a node abruptly. A process gets SIGKILL: nothing it buffered is flushed and no
// deferred code runs. In process there is no such thing, so Kill stops the service the way
// suite.StopReplica does: its heartbeats stop and its connections close, without a hand-over.
func (c *Cluster) Kill(kind Kind, id uint64) {
	c.t.Helper()
	if !c.cfg.processes {
		c.Stop(kind, id)
		return
	}
	c.mu.Lock()
	n := c.nodes[key{kind, id}]
	require.NotNil(c.t, n, "testcluster: no %s %d", kind, id)
	running := n.running
	n.running = false
	c.mu.Unlock()
	if running {
		require.NoError(c.t, n.proc.kill())
	}
}

// Restart starts a stopped or killed node again on its address and data directory and waits
// until it is ready.
func (c *Cluster) Restart(kind Kind, id uint64) {
	c.t.Helper()
	c.start(c.node(kind, id))
}

// Pause freezes a node's process (SIGSTOP): it holds its connections and leases but answers
// nothing, as a node stalled by the scheduler or a long GC pause would. Process mode only.
func (c *Cluster) Pause(kind Kind, id uint64) {
	c.t.Helper()
	c.signalProc(kind, id, "pause", syscall.SIGSTOP)
}

// Resume lets a paused node's process run again (SIGCONT).
func (c *Cluster) Resume(kind Kind, id uint64) {
	c.t.Helper()
	c.signalProc(kind, id, "resume", syscall.SIGCONT)
}

func (c *Cluster) signalProc(kind Kind, id uint64, what string, sig syscall.Signal) {
	c.t.Helper()
	if !c.cfg.processes {
		c.t.Fatalf("testcluster: %s needs Processes(): a goroutine cannot be frozen", what)
	}
	n := c.node(kind, id)
	c.mu.Lock()
	running, p := n.running, n.proc
	c.mu.Unlock()
	require.True(c.t, running, "testcluster: %s %s %d: not running", what, kind, id)
	require.NoError(c.t, p.signal(sig))
}

// stopAll stops every running node, clients of a tier before it.
func (c *Cluster) stopAll() {
	if c.t.Failed() && c.cfg.processes {
		c.mu.Lock()
		var all []*node
		for _, n := range c.nodes {
			all = append(all, n)
		}
		c.mu.Unlock()
		for _, n := range all {
			c.dumpLog(n)
		}
	}
	for _, kind := range []Kind{KindGateway, KindChannelctl, KindReplica, KindArbiter} {
		for _, id := range c.IDs(kind) {
			if err := c.StopErr(kind, id); err != nil {
				c.t.Errorf("testcluster: %v", err)
			}
		}
	}
	c.connMu.Lock()
	defer c.connMu.Unlock()
	for _, conn := range c.conns {
		_ = conn.Close()
	}
	c.conns = map[string]*grpc.ClientConn{}
}
