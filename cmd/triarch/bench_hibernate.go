package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/bench"
	"github.com/triarch-io/triarch/pkg/client"
)

type hibernateFlags struct {
	target         targetFlags
	channels       int
	sample         int
	size           int
	producers      int
	hibernateAfter time.Duration
	hibernateWait  time.Duration
	replicaMetrics []string
}

func newBenchHibernateCmd() *cobra.Command {
	var f hibernateFlags
	cmd := &cobra.Command{
		Use:   "hibernate",
		Short: "Replica memory per hibernated channel, then the first-send latency of waking a sample",
		Long: `Creates --channels channels with one message each, waits until all of them hibernated, and
reports the replicas' memory (RSS and Go heap in use, from their /metrics) before the channels
existed and after they hibernated, divided by the channel count. Then it wakes --sample of them
with one message each and reports the first send's latency, and reads them back: each must hold
both messages.

With --dev the suite hibernates idle channels after --hibernate-after; its replicas share one
process with everything else (bench client included), which is measured once, after a forced
GC. Against a running cluster give --replica-metrics; the processes are measured as they are
(a remote GC cannot be forced), and --hibernate-wait must cover the cluster's own idle time.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := runHibernate(cmd.Context(), cmd, f); err != nil {
				return fmt.Errorf("bench hibernate: %w", err)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	addTargetFlags(fs, &f.target)
	fs.IntVar(&f.channels, "channels", 10_000, "number of channels to create and let hibernate")
	fs.IntVar(&f.sample, "sample", 100, "number of hibernated channels to wake")
	fs.IntVar(&f.size, "size", 128, "payload size of each message in bytes")
	fs.IntVar(&f.producers, "producers", 64, "channels created at once (waking is one at a time)")
	fs.DurationVar(&f.hibernateAfter, "hibernate-after", 2*time.Second, "with --dev: idle time before the suite hibernates a channel")
	fs.DurationVar(&f.hibernateWait, "hibernate-wait", 5*time.Minute, "how long to wait for all channels to hibernate")
	fs.StringSliceVar(&f.replicaMetrics, "replica-metrics", nil, "with --gateway: the replicas' /metrics URLs (or admin host:port), comma-separated")
	return cmd
}

func (f hibernateFlags) validate(cmd *cobra.Command) error {
	switch err := f.target.validate(cmd); {
	case err != nil:
		return err
	case !f.target.dev && len(f.replicaMetrics) == 0:
		return errors.New("against a running cluster (--gateway) give --replica-metrics with each replica's admin /metrics URL, or use --dev")
	case f.target.dev && len(f.replicaMetrics) > 0:
		return errors.New("--replica-metrics is for --gateway; the dev suite knows its replicas")
	case !f.target.dev && cmd.Flags().Changed("hibernate-after"):
		return errors.New("--hibernate-after is for --dev; a running cluster hibernates after its own channelctl setting")
	case f.channels < 1:
		return fmt.Errorf("--channels %d: must be at least 1", f.channels)
	case f.sample < 1 || f.sample > f.channels:
		return fmt.Errorf("--sample %d: must be 1 to --channels (%d)", f.sample, f.channels)
	case f.size < 0:
		return fmt.Errorf("--size %d: must not be negative", f.size)
	case f.producers < 1:
		return fmt.Errorf("--producers %d: must be at least 1", f.producers)
	case f.hibernateAfter <= 0 || f.hibernateWait <= 0:
		return errors.New("--hibernate-after and --hibernate-wait must be positive")
	}
	return nil
}

func runHibernate(ctx context.Context, cmd *cobra.Command, f hibernateFlags) error {
	if err := f.validate(cmd); err != nil {
		return err
	}
	hibernateAfter := time.Duration(0)
	if f.target.dev {
		hibernateAfter = f.hibernateAfter
	}
	tgt, err := openTarget(ctx, f.target, hibernateAfter)
	if err != nil {
		return err
	}
	defer tgt.stop()
	c, err := dialBench(ctx, tgt.addr, client.Options{})
	if err != nil {
		return err
	}
	defer c.Close()

	mem := newMemoryProbe(tgt, f.replicaMetrics)
	started := time.Now()
	res := &bench.HibernateResult{Header: bench.NewHeader("hibernate", version, started), Params: bench.HibernateParams{
		Gateway: tgt.gatewayParam(), Dev: f.target.dev, Channels: f.channels, Sample: f.sample, Size: f.size,
		Producers: f.producers, HibernateWait: f.hibernateWait.String(), ReplicaMetrics: mem.urls},
		Processes: len(mem.urls), MemoryNote: mem.note()}
	if f.target.dev {
		res.Params.HibernateAfter = f.hibernateAfter.String()
	}
	if res.Before, err = mem.measure(ctx); err != nil {
		return err
	}

	names, prefix := benchChannelNames(f.channels)
	sample := sampleChannels(names, f.sample)
	ledger := bench.NewLedger(sample)
	payload := make([]byte, f.size)
	_, _ = rand.Read(payload)
	if err := fillChannels(ctx, cmd, c, names, ledger, payload, f.producers); err != nil {
		return err
	}
	res.CreateSeconds = time.Since(started).Seconds()
	created := time.Now()
	if err := waitHibernated(ctx, cmd, c, prefix, f.channels, f.hibernateWait); err != nil {
		return err
	}
	res.HibernateSeconds = time.Since(created).Seconds()
	if res.After, err = mem.measure(ctx); err != nil {
		return err
	}
	res.PerChannel = bench.Memory{RSS: (res.After.RSS - res.Before.RSS) / float64(f.channels),
		HeapInuse: (res.After.HeapInuse - res.Before.HeapInuse) / float64(f.channels)}

	wake, wakeErrs := wakeChannels(ctx, c, sample, ledger, payload)
	res.Wake, res.WakeErrors = bench.Summarize(wake), wakeErrs
	v, err := bench.Verify(ctx, c, ledger)
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
	case v.Acked != int64(2*len(sample)):
		return fmt.Errorf("woken channels: %d of %d messages acknowledged (errors: %v)", v.Acked, 2*len(sample), wakeErrs)
	}
	return nil
}

// fillChannels sends one message to each channel (which creates it), recording the acks of
// the channels the ledger tracks. Any failure fails the scenario: a channel short of its
// message would make the per-channel memory a guess.
func fillChannels(ctx context.Context, cmd *cobra.Command, c *client.Client, names []string, ledger *bench.Ledger,
	payload []byte, producers int) error {
	live := &bench.Live{}
	progress := bench.StartProgress(progressOut(cmd), live, time.Second)
	st, err := bench.Run(ctx, bench.Load{Workers: producers, MaxOps: int64(len(names))}, live,
		func(ctx context.Context, _ int, i int64) (bench.Done, error) {
			ch := names[i]
			res, err := c.Send(ctx, ch, client.Outgoing{Sender: "bench", Payload: payload})
			if err != nil {
				return bench.Done{}, err
			}
			ledger.Record(ch, bench.Ack{ClientMsgID: res[0].ClientMsgID, Seq: res[0].Seq})
			return bench.Done{Msgs: 1}, nil
		})
	progress.Stop()
	if err != nil {
		return err
	}
	if n := st.ErrorCount(); n > 0 {
		return fmt.Errorf("creating the channels: %d of %d first sends failed (%v)", n, len(names), st.Errors)
	}
	return nil
}

// hibernatePoll is how often the channel states are polled while waiting.
const hibernatePoll = time.Second

// waitHibernated polls until all n channels with prefix are hibernated, or wait has passed.
// The cluster's hibernated count is checked first: listing every channel is only worth it
// once enough of them could be ours.
func waitHibernated(ctx context.Context, cmd *cobra.Command, c *client.Client, prefix string, n int, wait time.Duration) error {
	var ours atomic.Int64
	progress := bench.StartLine(progressOut(cmd), time.Second, func(elapsed time.Duration) string {
		return fmt.Sprintf("%6.1fs  waiting for hibernation: %s of %s channels hibernated", elapsed.Seconds(),
			bench.Group(ours.Load()), bench.Group(int64(n)))
	})
	defer progress.Stop()
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		cl, err := c.Cluster(wctx)
		if err == nil && cl.GetHibernatedChannels() >= uint64(n) {
			var count int64
			err = listChannels(wctx, c, func(ch *triarchv1.Channel) {
				if strings.HasPrefix(ch.GetChannelId(), prefix) && ch.GetState() == triarchv1.ChannelState_CHANNEL_STATE_HIBERNATED {
					count++
				}
			})
			ours.Store(count)
			if err == nil && count == int64(n) {
				return nil
			}
		}
		if !sleepUntil(wctx, time.Now().Add(hibernatePoll)) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%d of %d channels hibernated within --hibernate-wait %v (last error: %v)", ours.Load(), n, wait, err)
		}
	}
}

// wakeChannels sends one message to each channel, one at a time so each send measures a wake
// alone, and returns the latencies of the successful ones and the failures by code.
func wakeChannels(ctx context.Context, c *client.Client, names []string, ledger *bench.Ledger, payload []byte) (*bench.Histogram, map[string]int64) {
	h, errs := bench.NewHistogram(), map[string]int64{}
	for _, ch := range names {
		t0 := time.Now()
		res, err := c.Send(ctx, ch, client.Outgoing{Sender: "bench", Payload: payload})
		if err != nil {
			errs[bench.ErrorCode(err)]++
			continue
		}
		h.RecordDuration(time.Since(t0))
		ledger.Record(ch, bench.Ack{ClientMsgID: res[0].ClientMsgID, Seq: res[0].Seq})
	}
	return h, errs
}

// memoryProbe measures the replicas' memory from their /metrics.
type memoryProbe struct {
	urls []string
	// dev: the replicas are this very process, so one scrape covers them and a GC can be
	// forced first.
	dev bool
	hc  *http.Client
}

func newMemoryProbe(tgt *benchTarget, given []string) *memoryProbe {
	p := &memoryProbe{hc: &http.Client{Timeout: 10 * time.Second}, dev: tgt.suite != nil}
	if p.dev {
		p.urls = []string{bench.MetricsURL(tgt.suite.ReplicaAdminAddrs()[0])}
	} else {
		for _, u := range given {
			p.urls = append(p.urls, bench.MetricsURL(u))
		}
	}
	return p
}

func (p *memoryProbe) note() string {
	if p.dev {
		return "one process holds the whole dev suite and the bench client; garbage collected and freed to the OS before each scrape"
	}
	return "sum over the replica processes, as their /metrics report it: no GC forced, so heap in use includes uncollected garbage"
}

// measure scrapes every process and sums their memory.
func (p *memoryProbe) measure(ctx context.Context) (bench.Memory, error) {
	if p.dev {
		debug.FreeOSMemory() // collects garbage and returns freed pages, so RSS means something
	}
	var sum bench.Memory
	for _, u := range p.urls {
		m, err := bench.ScrapeMemory(ctx, p.hc, u)
		if err != nil {
			return sum, err
		}
		sum = sum.Add(m)
	}
	return sum, nil
}
