package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/triarch-io/triarch/pkg/bench"
	"github.com/triarch-io/triarch/pkg/client"
	"github.com/triarch-io/triarch/pkg/tlsx"
)

// benchFlags are the flags every bench scenario shares, plus the scenario's own.
type benchFlags struct {
	gateway        string
	dev            bool
	channels       int
	producers      int
	batch          int
	size           int
	duration       time.Duration
	messages       int64
	rate           float64
	jsonPath       string
	verifyChannels int
}

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench SCENARIO",
		Short: "Measure a cluster: throughput, latency, failover, hibernate, fanout",
		Long: `Measure a running cluster (--gateway, gRPC) or an in-process dev suite (--dev) under load.

Scenarios:
  throughput  closed-loop producers sending batches: acked msgs/s and MB/s, send latency
  latency     one message per send at a fixed offered rate (--rate), latency measured from the
              intended send time (no coordinated omission)
  failover    steady writers on every channel, then the replica leading the most channels is
              killed: per-channel unavailability, detection and election times
  hibernate   many channels with one message each, left to hibernate: replica memory per
              hibernated channel, then the latency of waking a sample of them
  fanout      subscribers on every channel while producers send at --rate: end-to-end delivery
              latency, every subscriber checked to get every acked message once, in order

Each prints a table at the end, shows a live progress line on a terminal, writes every figure
with --json FILE, and checks what it sent: it reads back (or, for fanout, compares what each
subscriber received) and fails if an acknowledged message is missing, duplicated or out of
place.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			return fmt.Errorf("bench %s: unknown scenario (throughput, latency, failover, hibernate or fanout)", args[0])
		},
	}
	cmd.AddCommand(newBenchThroughputCmd(), newBenchLatencyCmd(), newBenchFailoverCmd(), newBenchHibernateCmd(), newBenchFanoutCmd())
	return cmd
}

func addBenchFlags(fs *pflag.FlagSet, f *benchFlags, producers int) {
	fs.StringVar(&f.gateway, "gateway", defaultGateway, "gateway gRPC address of the cluster to measure")
	fs.BoolVar(&f.dev, "dev", false, "start a dev suite (3 replicas) in a temp directory in this process and measure it instead of --gateway")
	fs.IntVar(&f.channels, "channels", 100, "number of channels to spread the load over")
	fs.IntVar(&f.producers, "producers", producers, "number of concurrent senders")
	fs.IntVar(&f.size, "size", 128, "payload size of each message in bytes")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "how long to send (0: until --messages are sent)")
	fs.Int64Var(&f.messages, "messages", 0, "stop after this many messages (0: no limit, --duration decides)")
	fs.StringVar(&f.jsonPath, "json", "", "also write all figures as JSON to this file")
	fs.IntVar(&f.verifyChannels, "verify-channels", 10, "number of channels read back after the run to verify the acked messages")
}

func newBenchThroughputCmd() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "throughput",
		Short: "Closed-loop producers sending batches: acked msgs/s, MB/s, send latency, read-back check",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd, "throughput", f)
		},
	}
	addBenchFlags(cmd.Flags(), &f, 32)
	cmd.Flags().IntVar(&f.batch, "batch", 100, "messages per send")
	return cmd
}

func newBenchLatencyCmd() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "latency",
		Short: "One message per send at a fixed offered rate; latency from the intended send time",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.batch = 1
			return runBench(cmd, "latency", f)
		},
	}
	addBenchFlags(cmd.Flags(), &f, 64)
	cmd.Flags().Float64Var(&f.rate, "rate", 1000, "offered messages per second, scheduled by the clock whether or not earlier sends are answered")
	return cmd
}

func (f *benchFlags) validate(cmd *cobra.Command, scenario string) error {
	switch {
	case f.dev && cmd.Flags().Changed("gateway"):
		return errors.New("--dev and --gateway exclude each other")
	case f.channels < 1:
		return fmt.Errorf("--channels %d: must be at least 1", f.channels)
	case f.producers < 1:
		return fmt.Errorf("--producers %d: must be at least 1", f.producers)
	case f.batch < 1 || f.batch > 1000:
		return fmt.Errorf("--batch %d: must be 1 to 1000", f.batch)
	case f.size < 0:
		return fmt.Errorf("--size %d: must not be negative", f.size)
	case f.duration < 0 || f.messages < 0:
		return errors.New("--duration and --messages must not be negative")
	case f.duration == 0 && f.messages == 0:
		return errors.New("give --duration or --messages: the load must end")
	case scenario == "latency" && f.rate <= 0:
		return fmt.Errorf("--rate %v: must be positive", f.rate)
	case f.verifyChannels < 0:
		return fmt.Errorf("--verify-channels %d: must not be negative", f.verifyChannels)
	}
	return nil
}

func runBench(cmd *cobra.Command, scenario string, f benchFlags) error {
	if err := f.validate(cmd, scenario); err != nil {
		return fmt.Errorf("bench %s: %w", scenario, err)
	}
	ctx := cmd.Context()
	addr := f.gateway
	if f.dev {
		s, stop, err := startBenchSuite(ctx, 0)
		if err != nil {
			return fmt.Errorf("bench %s: start the dev suite: %w", scenario, err)
		}
		defer stop()
		addr = s.GRPCAddr()
	}
	c, err := dialGateway(ctx, addr, tlsx.Files{}) // bench takes no TLS flags yet: plaintext
	if err != nil {
		return err
	}
	defer c.Close()

	names, _ := benchChannelNames(f.channels)
	if err := createChannels(ctx, c, names, min(f.producers, 64)); err != nil {
		return fmt.Errorf("bench %s: %w", scenario, err)
	}
	ledger := bench.NewLedger(sampleChannels(names, f.verifyChannels))
	payload := make([]byte, f.size)
	_, _ = rand.Read(payload)

	op := func(ctx context.Context, _ int, i int64) (bench.Done, error) {
		ch := names[i%int64(len(names))]
		msgs := make([]client.Outgoing, f.batch)
		for j := range msgs {
			msgs[j] = client.Outgoing{Sender: "bench", Payload: payload}
		}
		res, err := c.Send(ctx, ch, msgs...)
		if err != nil {
			return bench.Done{}, err
		}
		if ledger.Tracks(ch) {
			acks := make([]bench.Ack, len(res))
			for j, r := range res {
				acks[j] = bench.Ack{ClientMsgID: r.ClientMsgID, Seq: r.Seq}
			}
			ledger.Record(ch, acks...)
		}
		return bench.Done{Msgs: int64(len(res)), Bytes: int64(len(res) * f.size)}, nil
	}
	load := bench.Load{Workers: f.producers, Rate: f.rate, Duration: f.duration}
	if f.messages > 0 {
		load.MaxOps = (f.messages + int64(f.batch) - 1) / int64(f.batch)
	}

	live := &bench.Live{}
	progress := bench.StartProgress(progressOut(cmd), live, time.Second)
	started := time.Now()
	stats, err := bench.Run(ctx, load, live, op)
	progress.Stop()
	if err != nil {
		return fmt.Errorf("bench %s: %w", scenario, err)
	}
	params := bench.Params{Dev: f.dev, Channels: f.channels, Producers: f.producers, Batch: f.batch, Size: f.size,
		Messages: f.messages, Rate: f.rate, VerifyChannels: len(sampleChannels(names, f.verifyChannels))}
	if !f.dev {
		params.Gateway = addr
	}
	if f.duration > 0 {
		params.Duration = f.duration.String()
	}
	res := bench.NewResult(scenario, version, params, started, stats)
	v, err := bench.Verify(ctx, c, ledger)
	if err != nil {
		return fmt.Errorf("bench %s: read-back: %w", scenario, err)
	}
	res.Verification = &v
	if err := writeReport(cmd, res, f.jsonPath); err != nil {
		return fmt.Errorf("bench %s: %w", scenario, err)
	}
	switch {
	case !v.OK:
		return fmt.Errorf("bench %s: %w", scenario, v.Err())
	case res.AckedMsgs == 0:
		return fmt.Errorf("bench %s: no message was acknowledged (errors: %v)", scenario, res.Errors)
	}
	return nil
}

// report is a scenario's result: a table for people, JSON for comparing runs.
type report interface {
	WriteTable(w io.Writer) error
	WriteJSON(path string) error
}

// writeReport prints res as a table and, when jsonPath is set, writes it there as JSON.
func writeReport(cmd *cobra.Command, res report, jsonPath string) error {
	if err := res.WriteTable(cmd.OutOrStdout()); err != nil {
		return err
	}
	if jsonPath == "" {
		return nil
	}
	if err := res.WriteJSON(jsonPath); err != nil {
		return fmt.Errorf("--json: %w", err)
	}
	return nil
}

// sampleChannels picks k channels spread evenly over names (all of them when k ≥ len).
func sampleChannels(names []string, k int) []string {
	if k >= len(names) {
		return names
	}
	out := make([]string, k)
	for i := range out {
		out[i] = names[i*len(names)/k]
	}
	return out
}

// createChannels creates the channels before the clock starts, so channel creation is not
// measured as send latency.
func createChannels(ctx context.Context, c *client.Client, names []string, workers int) error {
	next := make(chan string)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for name := range next {
				if _, err := c.CreateChannel(ctx, name, 0); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var err error
feed:
	for _, name := range names {
		select {
		case next <- name:
		case err = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}
