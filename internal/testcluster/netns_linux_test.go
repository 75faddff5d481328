package testcluster

import (
	"errors"
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

var errProbeTimeout = errors.New("no answer")

// probe connects from one node's namespace to another node's gRPC port, as the node itself
// would, and says how long the handshake took, or how it failed.
func probe(t *testing.T, c *Cluster, from, to Target, timeout time.Duration) (time.Duration, error) {
	t.Helper()
	c.net.mu.Lock()
	ns := c.net.nodes[key{from.Kind, from.ID}].ns
	c.net.mu.Unlock()
	fd, err := socketIn(filepath.Join(netnsRun, ns), syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer syscall.Close(fd)
	require.Less(t, fd, 1024, "select(2) needs a small descriptor")
	start := time.Now()
	err = syscall.Connect(fd, &syscall.SockaddrInet4{Port: 7000, Addr: c.IP(to).As4()})
	if err != nil && !errors.Is(err, syscall.EINPROGRESS) {
		return 0, err
	}
	for {
		left := timeout - time.Since(start)
		if left <= 0 {
			return 0, errProbeTimeout
		}
		var w syscall.FdSet
		w.Bits[fd/64] |= 1 << (uint(fd) % 64)
		tv := syscall.NsecToTimeval(left.Nanoseconds())
		n, err := syscall.Select(fd+1, nil, &w, nil, &tv)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		require.NoError(t, err)
		if n == 0 {
			continue
		}
		soErr, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ERROR)
		require.NoError(t, err)
		if soErr != 0 {
			return 0, syscall.Errno(soErr)
		}
		return time.Since(start), nil
	}
}

// A cluster of processes in namespaces forms on its own addresses, its processes are the
// binary itself (kill -9 and SIGSTOP reach them, not a wrapper), cuts drop packets without a
// reset, one way or both, degraded links delay and lose packets, and writes go on, losing
// nothing acknowledged, while a replica is isolated, killed and paused.
func TestNetnsClusterFormsAndSurvivesIsolation(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a cluster of processes in network namespaces")
	}
	// A run killed before its cleanups left a namespace behind: the next run removes it.
	var stale string
	if os.Geteuid() == 0 {
		gone := exec.Command("true")
		require.NoError(t, gone.Run())
		stale = fmt.Sprintf("%s%d-1-hub", netnsPrefix, gone.ProcessState.Pid())
		require.NoError(t, run("ip", "netns", "add", stale))
		t.Cleanup(func() { _ = run("ip", "netns", "del", stale) })
	}
	c := Start(t, Netns(), Channelctls(1), WithGateway())
	_, err := os.Stat(filepath.Join(netnsRun, stale))
	require.ErrorIs(t, err, os.ErrNotExist, "a dead run's namespace is left")
	ctx := testutil.Context(t, 5*time.Minute)
	bin, err := filepath.EvalSymlinks(c.bin)
	require.NoError(t, err)
	for _, n := range c.Targets() {
		require.True(t, strings.HasPrefix(c.Addr(n.Kind, n.ID), c.IP(n).String()+":"), "%v listens on %s", n, c.Addr(n.Kind, n.ID))
		require.True(t, c.IP(n).Is4() && c.IP(n).As4()[0] == 10 && c.IP(n).As4()[1] == 77, "%v at %v", n, c.IP(n))
		nd := c.node(n.Kind, n.ID)
		pid := nd.proc.cmd.Process.Pid
		exe, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
		require.NoError(t, err)
		require.Equal(t, bin, exe, "%v: pid %d is not the binary", n, pid)
		var inNs, want syscall.Stat_t
		require.NoError(t, syscall.Stat(filepath.Join("/proc", strconv.Itoa(pid), "ns", "net"), &inNs))
		c.net.mu.Lock()
		ns := c.net.nodes[key{n.Kind, n.ID}].ns
		c.net.mu.Unlock()
		require.NoError(t, syscall.Stat(filepath.Join(netnsRun, ns), &want))
		require.Equal(t, want.Ino, inNs.Ino, "%v runs outside its namespace", n)
	}

	r1, r2, r3 := Target{KindReplica, 1}, Target{KindReplica, 2}, Target{KindReplica, 3}
	connects := func(from, to Target) {
		t.Helper()
		_, err := probe(t, c, from, to, 10*time.Second)
		require.NoError(t, err, "%v -> %v", from, to)
	}
	blackHoled := func(from, to Target) {
		t.Helper()
		_, err := probe(t, c, from, to, time.Second)
		require.ErrorIs(t, err, errProbeTimeout, "%v -> %v: a cut must drop, not refuse", from, to)
	}
	connects(r1, r2)
	cut := c.Cut(r1, r2)
	blackHoled(r1, r2) // the SYN is lost
	blackHoled(r2, r1) // the SYN-ACK is
	connects(r1, r3)
	connects(r3, r2)
	cut.Heal()
	cut.Heal()
	connects(r1, r2)

	// Two faults over one link: it stays cut until both are healed.
	iso := c.Isolate(r3)
	cut = c.Cut(r1, r3)
	blackHoled(r3, r1)
	iso.Heal()
	blackHoled(r1, r3)
	connects(r3, r2)
	c.Heal()
	connects(r1, r3)

	slow := c.Degrade(Netem{Delay: 300 * time.Millisecond}, r1, r2)
	took, err := probe(t, c, r1, r2, 10*time.Second)
	require.NoError(t, err)
	require.GreaterOrEqual(t, took, 300*time.Millisecond, "a handshake over a link delayed 300ms")
	took, err = probe(t, c, r2, r1, 10*time.Second)
	require.NoError(t, err)
	require.GreaterOrEqual(t, took, 300*time.Millisecond, "the SYN-ACK of a link delayed 300ms one way")
	lossy := c.Degrade(Netem{Loss: 1}, r1, r2)
	blackHoled(r1, r2)
	lossy.Heal() // the older degradation is back
	took, err = probe(t, c, r1, r2, 10*time.Second)
	require.NoError(t, err)
	require.GreaterOrEqual(t, took, 300*time.Millisecond)
	slow.Heal()
	// The fastest of a few handshakes: a loaded machine may stall one.
	fastest := time.Hour
	for range 3 {
		took, err = probe(t, c, r1, r2, 10*time.Second)
		require.NoError(t, err)
		fastest = min(fastest, took)
	}
	require.Less(t, fastest, 300*time.Millisecond, "a healed link still delays")

	l := c.NewAckLedger(t, ctx, 4, "n")
	l.SendAll("before")
	c.Isolate(r3)
	l.SendAll("isolated")
	c.Heal()
	c.Kill(KindReplica, 1)
	l.SendAll("killed")
	c.Restart(KindReplica, 1)
	c.Pause(KindReplica, 2)
	l.SendAll("paused")
	c.Resume(KindReplica, 2)
	l.SendAll("healed")
	l.Verify()
}
