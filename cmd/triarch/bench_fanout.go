package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/bench"
	"github.com/triarch-io/triarch/pkg/client"
)

type fanoutFlags struct {
	target      targetFlags
	channels    int
	subscribers int
	producers   int
	rate        float64
	size        int
	duration    time.Duration
	messages    int64
}

func newBenchFanoutCmd() *cobra.Command {
	var f fanoutFlags
	cmd := &cobra.Command{
		Use:   "fanout",
		Short: "Subscribers on every channel under a fixed send rate: delivery latency, in-order exactly-once check",
		Long: `Subscribes --subscribers streams to each of --channels channels through the gateway, then sends
one message per send at --rate in all (open loop). Each message carries its send's start time,
so every delivery's latency is measured from the send to the subscriber's receipt. At the end
every subscriber must have received every acknowledged message of its channel exactly once, at
its seq, in seq order; the streams are read raw (no client-side reordering or deduplication), so
this checks the gateway.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := runFanout(cmd.Context(), cmd, f); err != nil {
				return fmt.Errorf("bench fanout: %w", err)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	addTargetFlags(fs, &f.target)
	fs.IntVar(&f.channels, "channels", 10, "number of channels")
	fs.IntVar(&f.subscribers, "subscribers", 10, "subscription streams per channel")
	fs.IntVar(&f.producers, "producers", 64, "concurrent senders at most")
	fs.Float64Var(&f.rate, "rate", 500, "offered messages per second over all channels, one message per send")
	fs.IntVar(&f.size, "size", 128, "payload size of each message in bytes (at least 8: the send time)")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "how long to send (0: until --messages are sent)")
	fs.Int64Var(&f.messages, "messages", 0, "stop after this many messages (0: no limit, --duration decides)")
	return cmd
}

func (f fanoutFlags) validate(cmd *cobra.Command) error {
	switch err := f.target.validate(cmd); {
	case err != nil:
		return err
	case f.channels < 1 || f.subscribers < 1 || f.producers < 1:
		return fmt.Errorf("--channels %d, --subscribers %d, --producers %d: each must be at least 1", f.channels, f.subscribers, f.producers)
	case f.rate <= 0:
		return fmt.Errorf("--rate %v: must be positive", f.rate)
	case f.size < stampSize:
		return fmt.Errorf("--size %d: at least %d, the payload carries the send time", f.size, stampSize)
	case f.duration < 0 || f.messages < 0:
		return errors.New("--duration and --messages must not be negative")
	case f.duration == 0 && f.messages == 0:
		return errors.New("give --duration or --messages: the load must end")
	}
	return nil
}

// stampSize is the send time at the head of every payload (Unix nanoseconds, big endian).
const stampSize = 8

// catchUpWait bounds the wait, after the last send, for the subscribers to receive the last
// acked messages; whatever has not arrived by then counts as missing.
const catchUpWait = 30 * time.Second

func runFanout(ctx context.Context, cmd *cobra.Command, f fanoutFlags) error {
	if err := f.validate(cmd); err != nil {
		return err
	}
	tgt, err := openTarget(ctx, f.target, 0)
	if err != nil {
		return err
	}
	defer tgt.stop()
	c, err := dialBench(ctx, tgt.addr, client.Options{})
	if err != nil {
		return err
	}
	defer c.Close()
	names, _ := benchChannelNames(f.channels)
	if err := createChannels(ctx, c, names, min(f.channels, 64)); err != nil {
		return err
	}

	sctx, stopSubs := context.WithCancel(ctx)
	defer stopSubs()
	subs := make([]*subscriber, 0, f.channels*f.subscribers)
	var delivered, resubscribes atomic.Int64
	var wg sync.WaitGroup
	for _, ch := range names {
		for k := range f.subscribers {
			s := &subscriber{channel: ch, index: k, lat: bench.NewHistogram(), delivered: &delivered, resubscribes: &resubscribes}
			subs = append(subs, s)
			wg.Go(func() { s.run(sctx, c.API()) })
		}
	}

	ledger := bench.NewLedger(names)
	live := &bench.Live{}
	var last int64
	var lastAt time.Duration
	progress := bench.StartLine(progressOut(cmd), time.Second, func(elapsed time.Duration) string {
		n := live.Msgs.Load()
		rate := float64(n-last) / (elapsed - lastAt).Seconds()
		last, lastAt = n, elapsed
		return fmt.Sprintf("%6.1fs  %s msgs/s  %s acked  %s delivered  %s errors", elapsed.Seconds(), bench.Group(int64(rate)),
			bench.Group(n), bench.Group(delivered.Load()), bench.Group(live.Errors.Load()))
	})
	started := time.Now()
	load := bench.Load{Workers: f.producers, Rate: f.rate, Duration: f.duration, MaxOps: f.messages}
	st, runErr := bench.Run(ctx, load, live, func(ctx context.Context, _ int, i int64) (bench.Done, error) {
		ch := names[i%int64(len(names))]
		payload := make([]byte, f.size)
		binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
		res, err := c.Send(ctx, ch, client.Outgoing{Sender: "bench", Payload: payload})
		if err != nil {
			return bench.Done{}, err
		}
		ledger.Record(ch, bench.Ack{ClientMsgID: res[0].ClientMsgID, Seq: res[0].Seq})
		return bench.Done{Msgs: 1, Bytes: int64(f.size)}, nil
	})
	if runErr == nil {
		waitCaughtUp(ctx, subs, ledger, catchUpWait)
	}
	stopSubs()
	wg.Wait()
	progress.Stop()
	if runErr != nil {
		return runErr
	}

	res := &bench.FanoutResult{Header: bench.NewHeader("fanout", version, started), Params: bench.FanoutParams{
		Gateway: tgt.gatewayParam(), Dev: f.target.dev, Channels: f.channels, Subscribers: f.subscribers,
		Producers: f.producers, Rate: f.rate, Size: f.size, Messages: f.messages},
		ElapsedSeconds: st.Elapsed.Seconds(), AckedMsgs: st.Msgs, Errors: st.Errors,
		SendLatency: bench.Summarize(st.Latency), Resubscribes: resubscribes.Load()}
	if f.duration > 0 {
		res.Params.Duration = f.duration.String()
	}
	lat := bench.NewHistogram()
	for _, s := range subs {
		lat.Merge(s.lat)
		res.Check.Add(s.channel, s.index, ledger.Acks(s.channel), s.got)
	}
	res.Check.Finish()
	res.Delivery = bench.Summarize(lat)
	if err := writeReport(cmd, res, f.target.jsonPath); err != nil {
		return err
	}
	switch ch := res.Check; {
	case !ch.OK:
		return fmt.Errorf("delivery check failed: %d missing, %d duplicated, %d misplaced, %d out of order, %d skipped",
			ch.Missing, ch.Duplicated, ch.Misplaced, ch.OutOfOrder, ch.Skipped)
	case res.AckedMsgs == 0:
		return fmt.Errorf("no message was acknowledged (errors: %v)", res.Errors)
	}
	return nil
}

// subscriber is one subscription stream: what it received, in order, and how late.
type subscriber struct {
	channel      string
	index        int
	got          []bench.Delivery
	lat          *bench.Histogram
	lastSeq      atomic.Uint64
	delivered    *atomic.Int64
	resubscribes *atomic.Int64
}

// run reads the stream until ctx ends. It deliberately uses the raw stream, not the client's
// Subscribe (which drops repeats and resumes on a skip): what the gateway sends is what is
// checked. A broken stream is opened again after the last seq received.
func (s *subscriber) run(ctx context.Context, api triarchv1.TriarchServiceClient) {
	for first := true; ctx.Err() == nil; first = false {
		if !first {
			s.resubscribes.Add(1)
			if !sleepUntil(ctx, time.Now().Add(50*time.Millisecond)) {
				return
			}
		}
		stream, err := api.SubscribeMessages(ctx, &triarchv1.SubscribeMessagesRequest{ChannelId: s.channel, FromSeq: s.lastSeq.Load() + 1})
		if err != nil {
			continue
		}
		for {
			resp, err := stream.Recv()
			if err != nil {
				break
			}
			now := time.Now()
			for _, m := range resp.GetMessages() {
				s.got = append(s.got, bench.Delivery{Seq: m.GetSeq(), ClientMsgID: m.GetClientMsgId()})
				if p := m.GetPayload(); len(p) >= stampSize {
					s.lat.RecordDuration(now.Sub(time.Unix(0, int64(binary.BigEndian.Uint64(p)))))
				}
				s.lastSeq.Store(max(s.lastSeq.Load(), m.GetSeq()))
				s.delivered.Add(1)
			}
		}
	}
}

// waitCaughtUp waits until every subscriber has received its channel's highest acked seq, or
// wait has passed.
func waitCaughtUp(ctx context.Context, subs []*subscriber, ledger *bench.Ledger, wait time.Duration) {
	top := map[string]uint64{}
	for _, s := range subs {
		if _, ok := top[s.channel]; !ok {
			for _, a := range ledger.Acks(s.channel) {
				top[s.channel] = max(top[s.channel], a.Seq)
			}
		}
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		behind := false
		for _, s := range subs {
			if s.lastSeq.Load() < top[s.channel] {
				behind = true
				break
			}
		}
		if !behind || !sleepUntil(ctx, time.Now().Add(10*time.Millisecond)) {
			return
		}
	}
}
