package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Fault is how the failover scenario takes a replica out.
type Fault string

const (
	// FaultKill stops the process (SIGKILL, or in-process Stop): its sockets close, so its
	// peers see resets at once.
	FaultKill Fault = "kill"
	// FaultPause freezes it (SIGSTOP, docker pause): its listening sockets still complete TCP
	// handshakes, but nothing answers, and no reset ever comes.
	FaultPause Fault = "pause"
	// FaultBlackhole drops its packets (nft, docker network disconnect): its connections
	// stall both ways with no reset, as behind a dead link.
	FaultBlackhole Fault = "blackhole"
)

// ParseFault reads a --fault value.
func ParseFault(s string) (Fault, error) {
	switch f := Fault(s); f {
	case FaultKill, FaultPause, FaultBlackhole:
		return f, nil
	}
	return "", fmt.Errorf("--fault %q: want kill, pause or blackhole", s)
}

// ProcCluster is a dev cluster (one arbiter, one channelctl, three replicas, the gateway) run
// as processes of the triarch binary on loopback, so that a replica can really be killed,
// paused or black-holed while the others run. Each replica runs under a uid of its own
// (procUIDBase + node id), which is what lets a black hole select its packets: an nftables
// rule in a table of this process's own drops every packet its sockets send, and every
// packet from its listening ports. It needs root for the uids and nftables.
type ProcCluster struct {
	dir      string
	procs    []*exec.Cmd
	exited   []chan struct{}
	replicas map[uint64]*exec.Cmd
	ports    map[uint64][]int // replica -> its listening ports
	gateway  string
	table    string // the nftables table of a black hole, "" when none
	paused   []*exec.Cmd
}

// procUIDBase + node id is the uid a replica process runs under.
const procUIDBase = 61000

// StartProcCluster starts the processes from bin with their data under dir (which must exist)
// and returns once the gateway and every node answer /readyz; the caller still waits for the
// replicas to register (they must be alive before channels are placed).
func StartProcCluster(ctx context.Context, bin, dir string) (_ *ProcCluster, err error) {
	c := &ProcCluster{dir: dir, replicas: map[uint64]*exec.Cmd{}, ports: map[uint64][]int{}}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	// The replicas run under uids of their own and must reach their data directories.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	ports, err := freePorts(2*6 + 1)
	if err != nil {
		return nil, err
	}
	next := func() int { p := ports[0]; ports = ports[1:]; return p }
	addr := func(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }
	arbiter, arbiterAdmin := next(), next()
	var admins []string
	start := func(name string, uid int, args ...string) (*exec.Cmd, error) {
		logf, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(bin, append(args, "--log-level", "warn")...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none", "OTEL_EXPORTER_OTLP_ENDPOINT=")
		if uid != 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
		}
		if err := cmd.Start(); err != nil {
			_ = logf.Close()
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); _ = logf.Close(); close(done) }()
		c.procs = append(c.procs, cmd)
		c.exited = append(c.exited, done)
		return cmd, nil
	}
	dataDir := func(name string, uid int) (string, error) {
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o750); err != nil {
			return "", err
		}
		if uid != 0 {
			if err := os.Chown(d, uid, uid); err != nil {
				return "", fmt.Errorf("give %s to uid %d: %w", d, uid, err)
			}
		}
		return d, nil
	}
	d, err := dataDir("arbiter-1", 0)
	if err != nil {
		return nil, err
	}
	if _, err := start("arbiter-1", 0, "arbiter", "--node-id", "1", "--listen", addr(arbiter), "--admin-addr", addr(arbiterAdmin),
		"--arbiters", addr(arbiter), "--peers", "1="+addr(arbiter), "--data-dir", d); err != nil {
		return nil, err
	}
	admins = append(admins, addr(arbiterAdmin))
	ctl, ctlAdmin := next(), next()
	if _, err := start("channelctl-101", 0, "channelctl", "--node-id", "101", "--listen", addr(ctl), "--admin-addr", addr(ctlAdmin),
		"--arbiters", addr(arbiter), "--hibernate-after", "2m", "--replace-dead-after", "10m"); err != nil {
		return nil, err
	}
	admins = append(admins, addr(ctlAdmin))
	for id := uint64(1); id <= 3; id++ {
		listen, admin := next(), next()
		uid := procUIDBase + int(id)
		name := fmt.Sprintf("replica-%d", id)
		d, err := dataDir(name, uid)
		if err != nil {
			return nil, err
		}
		cmd, err := start(name, uid, "replica", "--node-id", strconv.FormatUint(id, 10), "--listen", addr(listen),
			"--admin-addr", addr(admin), "--arbiters", addr(arbiter), "--data-dir", d,
			"--dedup-window", "24h", "--dedup-max-ids", "100000")
		if err != nil {
			return nil, err
		}
		c.replicas[id] = cmd
		c.ports[id] = []int{listen, admin}
		admins = append(admins, addr(admin))
	}
	gw, gwAdmin, gwHTTP := next(), next(), next()
	if _, err := start("gateway-1", 0, "gateway", "--node-id", "1", "--listen", addr(gw), "--admin-addr", addr(gwAdmin),
		"--http-addr", addr(gwHTTP), "--arbiters", addr(arbiter), "--channelctls", addr(ctl), "--default-replication", "3"); err != nil {
		return nil, err
	}
	admins = append(admins, addr(gwAdmin))
	c.gateway = addr(gw)
	for _, a := range admins {
		if err := waitReady(ctx, a); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Gateway is the gateway's gRPC address.
func (c *ProcCluster) Gateway() string { return c.gateway }

// Inflict applies the fault to the replica node and says how.
func (c *ProcCluster) Inflict(f Fault, node uint64) (string, error) {
	p := c.replicas[node]
	if p == nil {
		return "", fmt.Errorf("no replica %d", node)
	}
	switch f {
	case FaultKill:
		return "SIGKILL", p.Process.Signal(syscall.SIGKILL)
	case FaultPause:
		c.paused = append(c.paused, p)
		return "SIGSTOP", p.Process.Signal(syscall.SIGSTOP)
	case FaultBlackhole:
		c.table = fmt.Sprintf("triarch_bench_%d", os.Getpid())
		uid := procUIDBase + int(node)
		var sports []string
		for _, port := range c.ports[node] {
			sports = append(sports, strconv.Itoa(port))
		}
		script := fmt.Sprintf("add table inet %[1]s\nadd chain inet %[1]s out { type filter hook output priority 0 ; }\n"+
			"add rule inet %[1]s out meta skuid %[2]d drop\nadd rule inet %[1]s out tcp sport { %[3]s } drop\n",
			c.table, uid, strings.Join(sports, ", "))
		cmd := exec.Command("nft", "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			c.table = ""
			return "", fmt.Errorf("nft: %w: %s", err, strings.TrimSpace(string(out)))
		}
		return fmt.Sprintf("nft: drop what uid %d sends and what leaves ports %s", uid, strings.Join(sports, ", ")), nil
	}
	return "", fmt.Errorf("unknown fault %q", f)
}

// Heal ends a pause or a black hole (a killed process stays dead).
func (c *ProcCluster) Heal() {
	if c.table != "" {
		_ = exec.Command("nft", "delete", "table", "inet", c.table).Run()
		c.table = ""
	}
	for _, p := range c.paused {
		_ = p.Process.Signal(syscall.SIGCONT)
	}
	c.paused = nil
}

// Stop heals, kills every process it started and waits briefly for them to go.
func (c *ProcCluster) Stop() {
	c.Heal()
	for _, p := range c.procs {
		if p.Process != nil {
			_ = p.Process.Signal(syscall.SIGKILL)
		}
	}
	for _, done := range c.exited {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	}
}

// freePorts reserves n loopback ports by listening on port 0, then releases them together.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserve a port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitReady polls an admin address's /readyz until it answers 200 or ctx ends.
func waitReady(ctx context.Context, admin string) error {
	deadline := time.Now().Add(60 * time.Second)
	var last error = errors.New("not polled")
	for time.Now().Before(deadline) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/readyz", nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("status %s", resp.Status)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s/readyz: %w", admin, last)
}
