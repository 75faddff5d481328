package testcluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/triarch-io/triarch/internal/testutil"
)

// BuildTriarch builds the triarch binary into the test's temp directory (the build cache makes
// every build after the first cheap), with the given build tags. It skips the test under -short.
func BuildTriarch(t testing.TB, tags ...string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the triarch binary and runs it as processes")
	}
	bin := filepath.Join(t.TempDir(), "triarch")
	args := []string{"build", "-o", bin}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	out, err := exec.Command("go", append(args, "github.com/triarch-io/triarch/cmd/triarch")...).CombinedOutput()
	require.NoError(t, err, string(out))
	return bin
}

// proc is one run of a node's process.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	log    string
}

func (c *Cluster) args(n *node) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	args := []string{n.kind.String(),
		"--node-id", strconv.FormatUint(n.id, 10),
		"--listen", n.addr,
		"--admin-addr", n.admin,
		"--arbiters", strings.Join(c.arbiterAddrs(), ","),
		"--log-level", "warn",
	}
	if c.cfg.logLevel != "" {
		args[len(args)-1] = c.cfg.logLevel
	} else if testutil.LogLevel() < 0 {
		args[len(args)-1] = "debug"
	}
	if n.dir != "" {
		args = append(args, "--data-dir", n.dir)
	}
	switch n.kind {
	case KindArbiter:
		var peers []string
		for id, addr := range c.peers() {
			peers = append(peers, fmt.Sprintf("%d=%s", id, addr))
		}
		args = append(args, "--peers", strings.Join(peers, ","))
	case KindChannelctl:
		args = append(args, "--hibernate-after", c.cfg.hibernateAfter.String(),
			"--replace-dead-after", c.cfg.replaceDeadAfter.String())
	case KindReplica:
		args = append(args, "--dedup-window", c.cfg.dedupWindow.String(),
			"--dedup-max-ids", strconv.Itoa(c.cfg.dedupMaxIDs))
		if c.cfg.replicaTick > 0 {
			args = append(args, "--tick-interval", c.cfg.replicaTick.String())
		}
	case KindGateway:
		args = append(args, "--http-addr", n.http, "--channelctls", strings.Join(c.gwCtls, ","),
			"--default-replication", strconv.FormatUint(uint64(c.cfg.replication), 10))
	}
	return args
}

func (c *Cluster) startProcess(n *node) {
	c.t.Helper()
	n.runs++
	logPath := filepath.Join(c.logs, fmt.Sprintf("%s-%d.run%d.log", n.kind, n.id, n.runs))
	logf, err := os.Create(logPath)
	require.NoError(c.t, err)
	cmd := exec.Command(c.bin, c.args(n)...)
	if c.net != nil {
		cmd = c.net.command(key{n.kind, n.id}, c.bin, c.args(n)...)
	}
	// The binary reads OTEL_* itself: a developer's exporter must not receive test spans.
	cmd.Env = append(os.Environ(), "OTEL_EXPORTER_OTLP_ENDPOINT=", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=", "OTEL_TRACES_EXPORTER=none")
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(c.t, cmd.Start())
	p := &proc{cmd: cmd, exited: make(chan struct{}), log: logPath}
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(p.exited)
	}()
	c.mu.Lock()
	n.proc, n.running = p, true
	c.mu.Unlock()
}

func (p *proc) signal(sig syscall.Signal) error {
	select {
	case <-p.exited:
		return fmt.Errorf("process %d exited already", p.cmd.Process.Pid)
	default:
	}
	return p.cmd.Process.Signal(sig)
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(stopTimeout):
		return fmt.Errorf("process %d survived SIGKILL", p.cmd.Process.Pid)
	}
}

// terminate sends SIGTERM (and SIGCONT, in case it was paused) and waits for the process to
// exit, killing it if it does not within stopTimeout.
func (p *proc) terminate() error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	select {
	case <-p.exited:
		return nil
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("process %d ignored SIGTERM for %v", p.cmd.Process.Pid, stopTimeout)
	}
}

// dumpLog logs the tail of the node's current run's log, for a failed test.
func (c *Cluster) dumpLog(n *node) {
	c.mu.Lock()
	p := n.proc
	c.mu.Unlock()
	if p == nil {
		return
	}
	b, _ := os.ReadFile(p.log)
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	c.t.Logf("%s %d, %s, log tail:\n%s", n.kind, n.id, filepath.Base(p.log), b)
}
