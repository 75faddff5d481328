package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/bench"
	"github.com/triarch-io/triarch/pkg/client"
)

type failoverFlags struct {
	target   targetFlags
	channels int
	size     int
	rate     float64
	warmup   time.Duration
	duration time.Duration
	killCmd  string
	fault    string
	procs    bool
	healCmd  string
}

func newBenchFailoverCmd() *cobra.Command {
	var f failoverFlags
	cmd := &cobra.Command{
		Use:   "failover",
		Short: "Kill the replica leading the most channels under steady writes: unavailability per channel, detection, election, read-back check",
		Long: `Steady writers on every channel (one each, one message per send); after --warmup, the replica
that leads the most channels is killed: stopped in-process with --dev, by --kill-cmd against a
running cluster. Each channel's unavailability is its longest gap between consecutive acks
around the kill; detection is the kill until the cluster status shows the node dead, election
the rest. After the run every channel is read back and every acked message must be present
exactly once at its seq.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := runFailover(cmd.Context(), cmd, f); err != nil {
				return fmt.Errorf("bench failover: %w", err)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	addTargetFlags(fs, &f.target)
	fs.IntVar(&f.channels, "channels", 1000, "number of channels, each with its own writer")
	fs.IntVar(&f.size, "size", 128, "payload size of each message in bytes")
	fs.Float64Var(&f.rate, "rate", 0, "offered messages per second over all channels (0: each writer sends again as soon as it is answered)")
	fs.DurationVar(&f.warmup, "warmup", 5*time.Second, "how long to write before the kill")
	fs.DurationVar(&f.duration, "duration", 20*time.Second, "how long to write in all, warm-up included")
	fs.StringVar(&f.killCmd, "kill-cmd", "", "with --gateway: command run by sh -c to kill a replica (or to inflict --fault on it); {node} is its node id,\n{address} its address (e.g. 'docker compose kill replica-{node}', 'docker pause main_replica-{node}_1')")
	fs.StringVar(&f.fault, "fault", "kill", "what happens to the replica: kill, pause (SIGSTOP, docker pause) or blackhole (its packets dropped);\nwith --dev, pause and blackhole run the suite as processes (--procs; blackhole needs root and nft)")
	fs.BoolVar(&f.procs, "procs", false, "with --dev: run the suite as processes of this binary (1 arbiter, 1 channelctl, 3 replicas, the gateway), so that\nthe fault hits a real process: kill is SIGKILL, pause SIGSTOP, blackhole an nftables drop")
	fs.StringVar(&f.healCmd, "heal-cmd", "", "with --gateway: command run by sh -c after the run, before the read-back, to undo the fault\n(e.g. 'docker unpause main_replica-{node}_1')")
	return cmd
}

func (f failoverFlags) validate(cmd *cobra.Command) error {
	switch err := f.target.validate(cmd); {
	case err != nil:
		return err
	case !f.target.dev && f.killCmd == "":
		return errors.New("against a running cluster (--gateway) the bench cannot kill a replica itself: give --kill-cmd " +
			"(e.g. --kill-cmd 'docker compose kill replica-{node}'), or use --dev")
	case f.target.dev && f.killCmd != "":
		return errors.New("--kill-cmd is for --gateway; with --dev the replica is stopped in-process")
	case f.target.dev && f.healCmd != "":
		return errors.New("--heal-cmd is for --gateway; with --dev the bench undoes its own fault")
	case !f.target.dev && f.procs:
		return errors.New("--procs is for --dev")
	case f.channels < 1:
		return fmt.Errorf("--channels %d: must be at least 1", f.channels)
	case f.size < 0:
		return fmt.Errorf("--size %d: must not be negative", f.size)
	case f.rate < 0:
		return fmt.Errorf("--rate %v: must not be negative", f.rate)
	case f.warmup <= 0 || f.duration <= f.warmup:
		return fmt.Errorf("--warmup %v and --duration %v: need 0 < warmup < duration", f.warmup, f.duration)
	}
	_, err := bench.ParseFault(f.fault)
	return err
}

// multiProcess reports whether the dev suite runs as processes: a pause or a black hole
// needs a process of its own to freeze or cut off.
func (f failoverFlags) multiProcess() bool {
	return f.target.dev && (f.procs || f.fault != string(bench.FaultKill))
}

// failoverSendTimeout bounds one send, retries included: a send that outlasts the failover
// several times over is an error, not a long gap.
const failoverSendTimeout = 15 * time.Second

// failoverBackoff keeps the client's retry pauses short, so a channel's measured gap is the
// cluster's unavailability rather than the client's backoff (the default grows to 2 s).
var failoverBackoff = client.Options{MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}

func runFailover(ctx context.Context, cmd *cobra.Command, f failoverFlags) error {
	if err := f.validate(cmd); err != nil {
		return err
	}
	var tgt *benchTarget
	var err error
	if f.multiProcess() {
		tgt, err = openProcTarget(ctx)
	} else {
		tgt, err = openTarget(ctx, f.target, 0)
	}
	if err != nil {
		return err
	}
	defer tgt.stop()
	c, err := dialBench(ctx, tgt.addr, failoverBackoff)
	if err != nil {
		return err
	}
	defer c.Close()
	names, prefix := benchChannelNames(f.channels)
	if err := createChannels(ctx, c, names, 64); err != nil {
		return err
	}

	started := time.Now()
	w := &failoverWriters{c: c, names: names, size: f.size, rate: f.rate, start: started, end: started.Add(f.duration),
		ledger: bench.NewLedger(names), acks: bench.NewAckTimes(started), errs: map[string]int64{}}
	progress := bench.StartProgress(progressOut(cmd), &w.live, time.Second)
	wctx, stopWriters := context.WithCancel(ctx)
	defer stopWriters()
	var writers sync.WaitGroup
	writers.Go(func() { w.run(wctx) })

	res := &bench.FailoverResult{Header: bench.NewHeader("failover", version, started), Params: bench.FailoverParams{
		Gateway: tgt.gatewayParam(), Dev: f.target.dev, Channels: f.channels, Size: f.size, Rate: f.rate,
		Warmup: f.warmup.String(), Duration: f.duration.String(), KillCmd: f.killCmd, Fault: f.fault,
		Processes: f.multiProcess(), HealCmd: f.healCmd}}
	k, killErr := killLeader(ctx, c, tgt, f, prefix, started)
	if killErr != nil {
		stopWriters()
	}
	writers.Wait()
	progress.Stop()
	if killErr != nil {
		return killErr
	}
	if err := healFault(ctx, tgt, f, k); err != nil {
		return err
	}
	end := time.Since(started)
	res.ElapsedSeconds = end.Seconds()
	res.AckedMsgs = w.live.Msgs.Load()
	res.Errors = w.errs
	res.KilledNode, res.KilledAddress, res.LedChannels, res.KilledBy = k.node, k.address, len(k.led), k.by
	res.KilledAtSeconds = k.at.Seconds()

	var all, led, others, before, after []time.Duration
	window := k.at / 2 // the second half of the warm-up, after the writers' start-up
	var ledOutages []bench.Outage
	for _, ch := range names {
		o := bench.LongestGap(w.acks.Of(ch), k.at, end)
		all = append(all, o.Gap)
		if !o.Recovered {
			res.Unrecovered++
		}
		if k.led[ch] {
			led = append(led, o.Gap)
			ledOutages = append(ledOutages, o)
		} else {
			others = append(others, o.Gap)
			acks := w.acks.Of(ch)
			before = append(before, bench.WindowGap(acks, k.at-window, k.at))
			after = append(after, bench.WindowGap(acks, k.at, k.at+window))
		}
	}
	res.UnavailabilityAll = bench.SummarizeDurations(all)
	res.UnavailabilityLed = bench.SummarizeDurations(led)
	res.UnavailabilityOthers = bench.SummarizeDurations(others)
	res.OthersBefore, res.OthersAfter = bench.SummarizeDurations(before), bench.SummarizeDurations(after)
	res.OthersWindowSeconds = window.Seconds()
	res.Recovery = bench.SummarizeDurations(bench.Recoveries(ledOutages, k.at))
	if detection, elections, early, ok := bench.Split(ledOutages, k.at, k.declared); ok {
		d := float64(detection) / 1e6
		res.DetectionMs = &d
		res.Election = bench.SummarizeDurations(elections)
		res.RecoveredBeforeDead = early
	}

	v, err := bench.Verify(ctx, c, w.ledger)
	if err != nil {
		return fmt.Errorf("read-back: %w", err)
	}
	res.Verification = &v
	if err := writeReport(cmd, res, f.target.jsonPath); err != nil {
		return err
	}
	switch {
	case !v.OK:
		return v.Err()
	case res.AckedMsgs == 0:
		return fmt.Errorf("no message was acknowledged (errors: %v)", res.Errors)
	case res.Unrecovered > 0:
		return fmt.Errorf("%d channels never acked again after the kill", res.Unrecovered)
	}
	return nil
}

// failoverWriters run one writer per channel until end, recording every ack's time and id.
type failoverWriters struct {
	c          *client.Client
	names      []string
	size       int
	rate       float64
	start, end time.Time
	ledger     *bench.Ledger
	acks       *bench.AckTimes
	live       bench.Live

	mu   sync.Mutex
	errs map[string]int64
}

// run starts one writer per channel and returns when all stopped: writers issue no send after
// end, and a send in flight then finishes (or times out) as any other, so the last gaps are
// not cut short by the run's end.
func (w *failoverWriters) run(ctx context.Context) {
	payload := make([]byte, w.size)
	_, _ = rand.Read(payload)
	// With a rate, each writer sends every interval, the writers' phases spread over it.
	var interval time.Duration
	if w.rate > 0 {
		interval = time.Duration(float64(len(w.names)) / w.rate * float64(time.Second))
	}
	var wg sync.WaitGroup
	for i, ch := range w.names {
		wg.Go(func() {
			next := w.start.Add(interval * time.Duration(i) / time.Duration(len(w.names)))
			for ctx.Err() == nil {
				if interval > 0 {
					if !next.Before(w.end) || !sleepUntil(ctx, next) {
						return
					}
					next = next.Add(interval)
				}
				if !time.Now().Before(w.end) {
					return
				}
				w.send(ctx, ch, payload)
			}
		})
	}
	wg.Wait()
}

func (w *failoverWriters) send(ctx context.Context, ch string, payload []byte) {
	sctx, cancel := context.WithTimeout(ctx, failoverSendTimeout)
	defer cancel()
	res, err := w.c.Send(sctx, ch, client.Outgoing{Sender: "bench", Payload: payload})
	if err != nil {
		if ctx.Err() != nil {
			return // the run was cancelled: neither an ack nor an error
		}
		w.mu.Lock()
		w.errs[bench.ErrorCode(err)]++
		w.mu.Unlock()
		w.live.Errors.Add(1)
		sleepUntil(ctx, time.Now().Add(10*time.Millisecond)) // no hot loop on a persistent error
		return
	}
	w.acks.Record(ch, time.Now())
	w.ledger.Record(ch, bench.Ack{ClientMsgID: res[0].ClientMsgID, Seq: res[0].Seq})
	w.live.Msgs.Add(1)
}

// sleepUntil waits until t; false when ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// kill is the outcome of killing the leader: which node, which of the run's channels it led,
// when it was killed and seen dead (offsets from the run's start; declared 0 when never seen).
type kill struct {
	node      uint64
	address   string
	led       map[string]bool
	by        string
	at        time.Duration
	declared  time.Duration
	commandMs float64
}

// detectPoll is how often the cluster status is polled for the killed node's state: the
// detection time is up to this much late.
const detectPoll = 10 * time.Millisecond

// killLeader waits out the warm-up, kills the replica that leads the most channels, and polls
// the cluster status until it shows that node dead or the run ends.
func killLeader(ctx context.Context, c *client.Client, tgt *benchTarget, f failoverFlags, prefix string, started time.Time) (kill, error) {
	var k kill
	if !sleepUntil(ctx, started.Add(f.warmup)) {
		return k, ctx.Err()
	}
	cl, err := c.Cluster(ctx)
	if err != nil {
		return k, err
	}
	var victim *triarchv1.NodeSummary
	for _, n := range cl.GetNodes() {
		if n.GetRole() == "replica" && n.GetState() == "alive" && (victim == nil || n.GetLeaders() > victim.GetLeaders()) {
			victim = n
		}
	}
	if victim == nil {
		return k, errors.New("the cluster status lists no live replica to kill")
	}
	k.node, k.address = victim.GetNodeId(), victim.GetAddress()
	if k.led, err = channelsLedBy(ctx, c, prefix, k.node); err != nil {
		return k, err
	}
	if tgt.procs != nil {
		k.at = time.Since(started)
		how, err := tgt.procs.Inflict(bench.Fault(f.fault), k.node)
		if err != nil {
			return k, err
		}
		k.by = fmt.Sprintf("%s of its process (%s)", f.fault, how)
	} else if tgt.suite != nil {
		k.by = "stopped in-process"
		k.at = time.Since(started)
		if err := tgt.suite.StopReplica(ctx, k.node); err != nil {
			return k, err
		}
	} else {
		line, err := bench.ExpandKillCmd(f.killCmd, k.node, k.address)
		if err != nil {
			return k, err
		}
		// When the process died between the command's start and its return is unknown; the kill
		// is taken to be at the start, so every gap the kill caused is counted (a gap ending
		// after the return could miss it when the command is slow, as docker CLIs are), at the
		// price of detection including the command's own run time, which is reported.
		k.at = time.Since(started)
		t0 := time.Now()
		if err := bench.RunKillCmd(ctx, line); err != nil {
			return k, err
		}
		k.commandMs = float64(time.Since(t0)) / 1e6
		k.by = fmt.Sprintf("by `%s` (took %.0f ms; times from its start)", line, k.commandMs)
	}
	pctx, cancel := context.WithDeadline(ctx, started.Add(f.duration))
	defer cancel()
	for sleepUntil(pctx, time.Now().Add(detectPoll)) {
		cl, err := c.Cluster(pctx)
		if err != nil {
			continue // the arbiter may be busy with the failover; try again
		}
		for _, n := range cl.GetNodes() {
			if n.GetNodeId() == k.node && n.GetRole() == "replica" && n.GetState() == "dead" {
				k.declared = time.Since(started)
				return k, nil
			}
		}
	}
	return k, nil
}

// healFault undoes a pause or a black hole once the writers stopped, so that the read-back
// sees the whole cluster: the bench's own processes are healed, --heal-cmd is run against a
// running cluster.
func healFault(ctx context.Context, tgt *benchTarget, f failoverFlags, k kill) error {
	if tgt.procs != nil {
		tgt.procs.Heal()
		return nil
	}
	if f.healCmd == "" {
		return nil
	}
	line, err := bench.ExpandKillCmd(f.healCmd, k.node, k.address)
	if err != nil {
		return fmt.Errorf("heal: %w", err)
	}
	return bench.RunKillCmd(ctx, line)
}

// channelsLedBy lists the channels with prefix whose leader is node.
func channelsLedBy(ctx context.Context, c *client.Client, prefix string, node uint64) (map[string]bool, error) {
	led := map[string]bool{}
	err := listChannels(ctx, c, func(ch *triarchv1.Channel) {
		if strings.HasPrefix(ch.GetChannelId(), prefix) && ch.GetLeaderNodeId() == node {
			led[ch.GetChannelId()] = true
		}
	})
	return led, err
}

// listChannels pages through every channel of the cluster.
func listChannels(ctx context.Context, c *client.Client, fn func(*triarchv1.Channel)) error {
	token := ""
	for {
		resp, err := c.API().ListChannels(ctx, &triarchv1.ListChannelsRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			return fmt.Errorf("list channels: %w", err)
		}
		for _, ch := range resp.GetChannels() {
			fn(ch)
		}
		if token = resp.GetNextPageToken(); token == "" {
			return nil
		}
	}
}
