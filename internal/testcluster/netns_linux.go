package testcluster

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// A Netns() cluster's network: every node in a network namespace of its own, each with one
// veth into a bridge that lives in a "hub" namespace, and a last veth from the hub into the
// root namespace, which holds 10.77.K.1 and routes the test's own calls to the nodes:
//
//	root ns: tcn<pid>-<n> 10.77.K.1/24 ──veth── hub ns: uplink ─ br0 ─ p<i> ──veth── node ns: eth0 10.77.K.<10+i>/24
//
// Faults are the network's, not the nodes': a cut is an nft rule of the bridge's forward
// hook in the hub (the packet vanishes on the wire: no RST, no ICMP, nothing the sender's
// kernel could notice), and delay and loss are done on packets queued from the hub's
// iptables (see nfqueue_linux.go). Deleting the hub and node namespaces removes every link,
// address, rule and queue this created.

const (
	netnsPrefix = "tcn"
	// netnsRun is where `ip netns` keeps its namespaces.
	netnsRun = "/var/run/netns"
	nfQueue  = 0
)

// netnsSeq tells apart the clusters of one test process.
var netnsSeq atomic.Int32

type netns struct {
	t      testing.TB
	name   string // tcn<pid>-<n>: the root interface, and the prefix of every namespace
	hub    string
	subnet [3]byte // 10.77.K

	mu      sync.Mutex
	nodes   map[key]*nsNode
	hosts   int
	faults  map[int]*netFault
	nextID  int
	cuts    map[link]bool
	links   map[link]Netem
	delayer *delayer
}

type nsNode struct {
	ns   string
	ip   netip.Addr
	port string // its veth's end in the hub
}

// newNetns makes the hub and the root's link into it, or skips the test when it cannot.
func newNetns(t testing.TB) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("testcluster: Netns() needs root (network namespaces, veth pairs, nft and iptables rules)")
	}
	for _, tool := range []string{"ip", "nft", "iptables-legacy", "iptables-legacy-restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("testcluster: Netns() needs %s (iproute2, nftables, iptables): %v", tool, err)
		}
	}
	sweepStale(t)
	n := &netns{t: t, name: fmt.Sprintf("%s%d-%d", netnsPrefix, os.Getpid(), netnsSeq.Add(1)),
		nodes: map[key]*nsNode{}, faults: map[int]*netFault{}, cuts: map[link]bool{}, links: map[link]Netem{}}
	n.hub = n.name + "-hub"
	// A namespace or link of this name can only be a crashed run's whose pid this one reuses.
	n.remove()
	t.Cleanup(n.cleanup)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("testcluster: netns: %v", err)
		}
	}
	must(run("ip", "netns", "add", n.hub))
	must(run("ip", "-n", n.hub, "link", "set", "lo", "up"))
	must(run("ip", "-n", n.hub, "link", "add", "br0", "type", "bridge"))
	must(run("ip", "-n", n.hub, "link", "set", "br0", "up"))
	// Bridged IPv4 goes through the hub's iptables too (br_netfilter), which queues the
	// degraded links' packets.
	must(runIn(n.hub, nil, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"))
	must(runIn(n.hub, strings.NewReader(`table bridge triarch {
	set cuts { type ipv4_addr . ipv4_addr; }
	chain cut { type filter hook forward priority 0; policy accept; ip saddr . ip daddr @cuts drop; }
}
`), "nft", "-f", "-"))
	must(runIn(n.hub, nil, "iptables-legacy", "-N", "TRIARCH"))
	must(runIn(n.hub, nil, "iptables-legacy", "-A", "FORWARD", "-j", "TRIARCH"))
	must(n.uplink())
	return n
}

// uplink picks a /24 of 10.77/16 no other run holds and links the root namespace to the hub
// on it, under a lock, since runs may start together.
func (n *netns) uplink() error {
	lockDir := "/run/lock"
	if _, err := os.Stat(lockDir); err != nil {
		lockDir = os.TempDir()
	}
	lock, err := os.OpenFile(filepath.Join(lockDir, "triarch-testcluster-netns.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()
	used := map[byte]bool{}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
			if b := p.Addr().As4(); b[0] == 10 && b[1] == 77 {
				used[b[2]] = true
			}
		}
	}
	k := -1
	for i := range 254 {
		if c := byte(1 + (os.Getpid()+int(netnsSeq.Load())+i)%254); !used[c] {
			k = int(c)
			break
		}
	}
	if k < 0 {
		return errors.New("every 10.77.K.0/24 is in use")
	}
	n.subnet = [3]byte{10, 77, byte(k)}
	root := netip.AddrFrom4([4]byte{10, 77, byte(k), 1})
	for _, args := range [][]string{
		{"link", "add", n.name, "type", "veth", "peer", "name", "uplink", "netns", n.hub},
		{"-n", n.hub, "link", "set", "uplink", "master", "br0", "up"},
		{"addr", "add", root.String() + "/24", "dev", n.name},
		{"link", "set", n.name, "up"},
	} {
		if err := run("ip", args...); err != nil {
			return err
		}
	}
	return nil
}

// attach gives a node its namespace and address.
func (n *netns) attach(k key) netip.Addr {
	n.t.Helper()
	n.mu.Lock()
	n.hosts++
	host := n.hosts
	n.mu.Unlock()
	if host > 240 {
		n.t.Fatal("testcluster: netns: more than 240 nodes")
	}
	nn := &nsNode{ns: fmt.Sprintf("%s-%s-%d", n.name, k.kind, k.id), port: fmt.Sprintf("p%d", host),
		ip: netip.AddrFrom4([4]byte{n.subnet[0], n.subnet[1], n.subnet[2], byte(10 + host)})}
	for _, args := range [][]string{
		{"netns", "add", nn.ns},
		{"-n", nn.ns, "link", "set", "lo", "up"},
		{"-n", n.hub, "link", "add", nn.port, "type", "veth", "peer", "name", "eth0", "netns", nn.ns},
		{"-n", n.hub, "link", "set", nn.port, "master", "br0", "up"},
		{"-n", nn.ns, "addr", "add", nn.ip.String() + "/24", "dev", "eth0"},
		{"-n", nn.ns, "link", "set", "eth0", "up"},
	} {
		if err := run("ip", args...); err != nil {
			n.t.Fatalf("testcluster: netns: %v", err)
		}
	}
	n.mu.Lock()
	n.nodes[k] = nn
	n.mu.Unlock()
	return nn.ip
}

// command runs bin in the node's namespace. `ip netns exec` execs bin in its own process
// (no fork), so the pid is bin's and signals reach it.
func (n *netns) command(k key, bin string, args ...string) *exec.Cmd {
	n.mu.Lock()
	ns := n.nodes[k].ns
	n.mu.Unlock()
	return exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
}

func (n *netns) ip(k key) (netip.Addr, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	nn, ok := n.nodes[k]
	if !ok {
		return netip.Addr{}, false
	}
	return nn.ip, true
}

// add records a fault and applies the network it leaves.
func (n *netns) add(f *netFault) (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nextID++
	f.id = n.nextID
	n.faults[f.id] = f
	return f.id, n.applyLocked()
}

// heal removes faults (every one when ids is empty).
func (n *netns) heal(ids ...int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(ids) == 0 {
		clear(n.faults)
	}
	for _, id := range ids {
		delete(n.faults, id)
	}
	return n.applyLocked()
}

// applyLocked makes the hub's rules what the faults in force say: every link cut by any of
// them is cut; a degraded link takes the newest fault's degradation.
func (n *netns) applyLocked() error {
	cuts := map[link]bool{}
	links := map[link]Netem{}
	for _, id := range slices.Sorted(maps.Keys(n.faults)) {
		f := n.faults[id]
		for _, l := range f.cuts {
			cuts[l] = true
		}
		maps.Copy(links, f.netem)
	}
	var errs []error
	if !maps.Equal(cuts, n.cuts) {
		var b strings.Builder
		b.WriteString("flush set bridge triarch cuts\n")
		if len(cuts) > 0 {
			var elems []string
			for _, l := range slices.SortedFunc(maps.Keys(cuts), compareLinks) {
				elems = append(elems, l.from.String()+" . "+l.to.String())
			}
			fmt.Fprintf(&b, "add element bridge triarch cuts { %s }\n", strings.Join(elems, ", "))
		}
		// One transaction: the set is replaced at once.
		if err := runIn(n.hub, strings.NewReader(b.String()), "nft", "-f", "-"); err != nil {
			errs = append(errs, err)
		} else {
			n.cuts = cuts
		}
	}
	if !maps.Equal(links, n.links) {
		if len(links) > 0 && n.delayer == nil {
			d, err := newDelayer(filepath.Join(netnsRun, n.hub), nfQueue, 1)
			if err != nil {
				return errors.Join(append(errs, fmt.Errorf("netfilter queue for delay and loss: %w", err))...)
			}
			n.delayer = d
		}
		// The delayer knows both the old and the new links while the rules change: a packet
		// queued for a link it does not know passes at once.
		both := maps.Clone(n.links)
		maps.Copy(both, links)
		if n.delayer != nil {
			n.delayer.Set(both)
		}
		var b strings.Builder
		b.WriteString("*filter\n:TRIARCH - [0:0]\n")
		for _, l := range slices.SortedFunc(maps.Keys(links), compareLinks) {
			fmt.Fprintf(&b, "-A TRIARCH -s %s/32 -d %s/32 -j NFQUEUE --queue-num %d --queue-bypass\n", l.from, l.to, nfQueue)
		}
		b.WriteString("COMMIT\n")
		if err := runIn(n.hub, strings.NewReader(b.String()), "iptables-legacy-restore", "--noflush"); err != nil {
			errs = append(errs, err)
		} else {
			n.links = links
		}
		if n.delayer != nil {
			n.delayer.Set(maps.Clone(n.links))
		}
	}
	return errors.Join(errs...)
}

func compareLinks(a, b link) int {
	if c := a.from.Compare(b.from); c != 0 {
		return c
	}
	return a.to.Compare(b.to)
}

// cleanup removes everything the cluster's network made; it runs after the nodes stopped.
func (n *netns) cleanup() {
	n.mu.Lock()
	d := n.delayer
	n.delayer = nil
	n.mu.Unlock()
	if d != nil {
		if err := d.Close(); err != nil {
			n.t.Logf("testcluster: netns: netfilter queue: %v", err)
		}
	}
	if errs := n.remove(); len(errs) > 0 {
		n.t.Errorf("testcluster: netns: cleanup: %v", errors.Join(errs...))
	}
}

// remove deletes the namespaces named after n.name and the root's link, killing any process
// still in them (one of this cluster's nodes that stopAll could not stop).
func (n *netns) remove() []error {
	return removeNamed(n.name)
}

var staleName = regexp.MustCompile(`^` + netnsPrefix + `(\d+)-(\d+)`)

// sweepStale removes the namespaces and root links that runs which no longer exist left
// behind (a test binary killed before its cleanups ran).
func sweepStale(t testing.TB) {
	names := map[string]bool{}
	entries, _ := os.ReadDir(netnsRun)
	for _, e := range entries {
		if m := staleName.FindStringSubmatch(e.Name()); m != nil {
			names[m[0]] = dead(m[1])
		}
	}
	if ifaces, err := net.Interfaces(); err == nil {
		for _, i := range ifaces {
			if m := staleName.FindStringSubmatch(i.Name); m != nil && m[0] == i.Name {
				names[m[0]] = dead(m[1])
			}
		}
	}
	for name, isDead := range names {
		if isDead {
			if errs := removeNamed(name); len(errs) > 0 {
				t.Logf("testcluster: netns: removing %s of a dead run: %v", name, errors.Join(errs...))
			}
		}
	}
}

func dead(pid string) bool {
	p, err := strconv.Atoi(pid)
	return err == nil && p != os.Getpid() && errors.Is(syscall.Kill(p, 0), syscall.ESRCH)
}

func removeNamed(name string) []error {
	var errs []error
	// The root's end of the uplink first (its other end goes with it): a namespace's links
	// are destroyed asynchronously once the namespace is deleted.
	if _, err := net.InterfaceByName(name); err == nil {
		if err := run("ip", "link", "del", name); err != nil {
			if _, gone := net.InterfaceByName(name); gone == nil {
				errs = append(errs, err)
			}
		}
	}
	entries, _ := os.ReadDir(netnsRun)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), name+"-") {
			continue
		}
		if out, err := exec.Command("ip", "netns", "pids", e.Name()).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if err := run("ip", "netns", "del", e.Name()); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func run(name string, args ...string) error {
	return runInput(nil, name, args...)
}

// runIn runs a command in the namespace ns.
func runIn(ns string, stdin *strings.Reader, name string, args ...string) error {
	return runInput(stdin, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

func runInput(stdin *strings.Reader, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
