package testcluster

import "time"

// config is a cluster's shape and the settings its services get.
type config struct {
	arbiters, channelctls, replicas int
	gateway                         bool
	processes                       bool
	netns                           bool
	lossy                           bool
	logLevel                        string
	binary                          string

	hibernateAfter   time.Duration
	replaceDeadAfter time.Duration
	balanceDelay     time.Duration
	failoverBudget   int
	replicaTick      time.Duration
	dedupWindow      time.Duration
	dedupMaxIDs      int
	replication      uint32
}

// The defaults keep a test's cluster still unless the test moves it: nothing hibernates or is
// repaired within a test's lifetime.
func defaults() config {
	return config{
		arbiters: 1, channelctls: 2, replicas: 3,
		hibernateAfter: time.Hour, replaceDeadAfter: time.Hour, balanceDelay: time.Second,
		dedupWindow: time.Hour, dedupMaxIDs: 10_000, replication: 3,
	}
}

// Option changes the cluster Start builds.
type Option func(*config)

// Arbiters sets the number of arbiter members (default 1). With more than one they form one
// raft group over fixed loopback addresses; with none, replicas run without an arbiter and a
// test (or a fake) must load and elect their groups itself.
func Arbiters(n int) Option { return func(c *config) { c.arbiters = n } }

// Channelctls sets the number of channel controllers (default 2).
func Channelctls(n int) Option { return func(c *config) { c.channelctls = n } }

// Replicas sets the number of replica nodes (default 3).
func Replicas(n int) Option { return func(c *config) { c.replicas = n } }

// WithGateway also starts a gateway pointed at the cluster's channelctls. A test that puts a
// fake channelctl in front of the replicas calls StartGateway instead.
func WithGateway() Option { return func(c *config) { c.gateway = true } }

// Processes runs every node as a process of the triarch binary instead of in this process.
// Settings the binary has no flag for (BalanceDelay, FailoverBudget, replica faults) are
// refused rather than silently ignored.
func Processes() Option { return func(c *config) { c.processes = true } }

// Netns runs every node as a process (it implies Processes()) in a network namespace of its
// own, on an address of its own, linked to the others through a bridge, so that the test can
// cut, isolate and degrade the network between nodes (Cut, Isolate, Degrade, Heal) while
// the test process itself still reaches every node. It needs root and iproute2, nftables
// and iptables (legacy); without them the test is skipped. Everything it creates is named
// after the test process's pid and removed when the test ends, as are the leftovers of runs
// that died before their cleanups.
func Netns() Option { return func(c *config) { c.processes, c.netns = true, true } }

// LogLevel sets the processes' --log-level (default warn; debug when TRIARCH_TEST_LOG is set).
func LogLevel(level string) Option { return func(c *config) { c.logLevel = level } }

// Binary runs the processes from a triarch binary already built, instead of building one.
func Binary(path string) Option { return func(c *config) { c.binary = path } }

// HibernateAfter sets the channelctls' idle time before a channel hibernates (default an hour).
func HibernateAfter(d time.Duration) Option { return func(c *config) { c.hibernateAfter = d } }

// ReplaceDeadAfter sets the channelctls' repair timeout (default an hour).
func ReplaceDeadAfter(d time.Duration) Option { return func(c *config) { c.replaceDeadAfter = d } }

// BalanceDelay sets the channelctls' delay before spreading leaders again (default 1s; in
// process only).
func BalanceDelay(d time.Duration) Option { return func(c *config) { c.balanceDelay = d } }

// FailoverBudget sets the channelctls' failover budget (0: their default; in process only).
func FailoverBudget(n int) Option { return func(c *config) { c.failoverBudget = n } }

// ReplicaTick sets the replicas' raft tick (0: their default).
func ReplicaTick(d time.Duration) Option { return func(c *config) { c.replicaTick = d } }

// Dedup sets the replicas' client_msg_id window and capacity (default an hour, 10,000).
func Dedup(window time.Duration, maxIDs int) Option {
	return func(c *config) { c.dedupWindow, c.dedupMaxIDs = window, maxIDs }
}

// Replication sets the replication factor the cluster's clients ask for when a send creates a
// channel, and the gateway's default (default 3).
func Replication(n uint32) Option { return func(c *config) { c.replication = n } }
