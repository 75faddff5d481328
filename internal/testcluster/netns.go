package testcluster

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Target names one node of the cluster.
type Target struct {
	Kind Kind
	ID   uint64
}

func (t Target) String() string { return fmt.Sprintf("%s-%d", t.Kind, t.ID) }

// Netem is a link's degradation: each packet is held Delay ± Jitter (drawn uniformly, but
// never overtaking the link's previous packet: no reordering) or lost with probability Loss.
type Netem struct {
	Delay, Jitter time.Duration
	Loss          float64
}

func (n Netem) String() string {
	var parts []string
	if n.Delay > 0 || n.Jitter > 0 {
		parts = append(parts, fmt.Sprintf("delay %v±%v", n.Delay, n.Jitter))
	}
	if n.Loss > 0 {
		parts = append(parts, fmt.Sprintf("loss %.0f%%", n.Loss*100))
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, " ")
}

// link is one direction between two nodes' addresses.
type link struct{ from, to netip.Addr }

// netFault is one Cut, Isolate or Degrade until it is healed.
type netFault struct {
	id    int
	cuts  []link
	netem map[link]Netem
}

// NetFault is a fault of a Netns() cluster's network, in force until its Heal (or the
// cluster's). Faults add up: a link two faults cut stays cut until both are healed; a link
// two faults degrade takes the newer one's degradation.
type NetFault struct {
	c    *Cluster
	id   int
	what string
}

func (f *NetFault) String() string { return f.what }

// Heal ends this fault, leaving the others in force. Healing twice does nothing.
func (f *NetFault) Heal() {
	f.c.t.Helper()
	if err := f.c.net.heal(f.id); err != nil {
		f.c.t.Fatalf("testcluster: heal %s: %v", f.what, err)
	}
}

// Cut drops every packet from one node to others, one way: the packets vanish between the
// nodes (no reset, no ICMP error), as on a broken link or a black-holing switch. A TCP
// connection then stalls both ways (its acknowledgements are lost too), but a datagram or a
// connection's data from the others still arrives. Netns() only.
func (c *Cluster) Cut(from Target, to ...Target) *NetFault {
	c.t.Helper()
	f := &netFault{}
	for _, t := range to {
		f.cuts = append(f.cuts, link{c.ip(from), c.ip(t)})
	}
	return c.addNetFault(f, fmt.Sprintf("cut %v -> %v", from, to))
}

// Isolate cuts a node from every other node of the cluster, both ways. The test process
// still reaches it (its clients, /readyz and the harness's own calls). Netns() only.
func (c *Cluster) Isolate(n Target) *NetFault {
	c.t.Helper()
	f := &netFault{}
	self := c.ip(n)
	for _, t := range c.Targets() {
		if t != n {
			other := c.ip(t)
			f.cuts = append(f.cuts, link{self, other}, link{other, self})
		}
	}
	return c.addNetFault(f, fmt.Sprintf("isolate %v", n))
}

// Degrade delays and drops packets from one node to others, one way, as l says. Netns() only.
func (c *Cluster) Degrade(l Netem, from Target, to ...Target) *NetFault {
	c.t.Helper()
	f := &netFault{netem: map[link]Netem{}}
	for _, t := range to {
		f.netem[link{c.ip(from), c.ip(t)}] = l
	}
	return c.addNetFault(f, fmt.Sprintf("degrade %v -> %v: %v", from, to, l))
}

func (c *Cluster) addNetFault(f *netFault, what string) *NetFault {
	c.t.Helper()
	id, err := c.net.add(f)
	if err != nil {
		c.t.Fatalf("testcluster: %s: %v", what, err)
	}
	return &NetFault{c: c, id: id, what: what}
}

// Targets are every node of the cluster, running or not, by kind and id.
func (c *Cluster) Targets() []Target {
	var out []Target
	for _, k := range []Kind{KindArbiter, KindChannelctl, KindReplica, KindGateway} {
		for _, id := range c.IDs(k) {
			out = append(out, Target{k, id})
		}
	}
	return out
}

// IP is a node's address in a Netns() cluster.
func (c *Cluster) IP(n Target) netip.Addr {
	c.t.Helper()
	return c.ip(n)
}

func (c *Cluster) ip(n Target) netip.Addr {
	c.t.Helper()
	if c.net == nil {
		c.t.Fatal("testcluster: network faults need Netns()")
	}
	ip, ok := c.net.ip(key{n.Kind, n.ID})
	if !ok {
		c.t.Fatalf("testcluster: no %v in this cluster", n)
	}
	return ip
}
