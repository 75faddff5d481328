package tests

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/internal/testcluster"
	"github.com/triarch-io/triarch/internal/testutil"
)

// Issue 13, "done when": the leader replica of a channel is paused (SIGSTOP) for 5 s while
// clients write and read through the gateway. No read may return fewer messages than were
// acknowledged before it began, no acknowledged message may be lost, and the resumed replica
// (a zombie that still thinks it leads) must serve no read that misses an acknowledged message.
func TestPausedLeaderServesNoStaleRead(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a cluster of processes")
	}
	c := testcluster.Start(t, testcluster.Processes(), testcluster.Channelctls(1), testcluster.WithGateway())
	ctx := testutil.Context(t, 3*time.Minute)
	conn, err := grpc.NewClient(c.GatewayAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	api := triarchv1.NewTriarchServiceClient(conn)
	const ch = "zombie"

	var (
		mu       sync.Mutex
		acked    = map[uint64]string{}
		ackedMax atomic.Uint64 // highest seq acknowledged so far (seqs are contiguous)
		stale    []string
		reads    atomic.Int64
		next     atomic.Int64
	)
	send := func(ctx context.Context) error {
		id := fmt.Sprintf("m%d", next.Add(1))
		// Each message keeps its id across retries, as a client does: the gateway's answer may
		// be lost while the entry committed.
		for {
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			resp, err := api.SendMessages(actx, &triarchv1.SendMessagesRequest{ChannelId: ch,
				Messages: []*triarchv1.MessageInput{{ClientMsgId: id, Payload: []byte(id)}}})
			cancel()
			if err == nil {
				seq := resp.GetResults()[0].GetSeq()
				mu.Lock()
				acked[seq] = id
				mu.Unlock()
				for cur := ackedMax.Load(); seq > cur && !ackedMax.CompareAndSwap(cur, seq); cur = ackedMax.Load() {
				}
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	readAll := func(ctx context.Context, read func(context.Context, uint64) ([]*triarchv1.Message, error)) (int, error) {
		n, from := 0, uint64(1)
		for {
			msgs, err := read(ctx, from)
			if err != nil {
				return 0, err
			}
			if len(msgs) == 0 {
				return n, nil
			}
			n += len(msgs)
			from = msgs[len(msgs)-1].GetSeq() + 1
		}
	}
	viaGateway := func(ctx context.Context, from uint64) ([]*triarchv1.Message, error) {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		resp, err := api.ReadMessages(rctx, &triarchv1.ReadMessagesRequest{ChannelId: ch, FromSeq: from, Limit: 1000})
		return resp.GetMessages(), err
	}
	check := func(who string, before uint64, got int) {
		if uint64(got) < before {
			mu.Lock()
			stale = append(stale, fmt.Sprintf("%s read %d messages, %d were acknowledged before it began", who, got, before))
			mu.Unlock()
		}
	}

	require.NoError(t, send(ctx))
	leader, err := c.Resolve(ctx, ch, 0)
	require.NoError(t, err)
	victim := leader.GetLeaderNodeId()

	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for wctx.Err() == nil {
				if err := send(wctx); err != nil && !errors.Is(err, context.Canceled) {
					t.Errorf("send: %v", err)
					return
				}
			}
		}()
	}
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for wctx.Err() == nil {
				before := ackedMax.Load()
				got, err := readAll(wctx, viaGateway)
				if err != nil {
					continue // unavailable during the failover: not a stale read
				}
				reads.Add(1)
				check("a gateway reader", before, got)
			}
		}()
	}

	// Let writes flow, then freeze the leader for 5 s: the arbiter declares it dead and the
	// channel gets a new leader, which takes writes the frozen one never sees.
	require.Eventually(t, func() bool { return ackedMax.Load() >= 20 }, time.Minute, 10*time.Millisecond)
	c.Pause(testcluster.KindReplica, victim)
	time.Sleep(5 * time.Second) // the fault's duration, not a wait for a condition
	c.Resume(testcluster.KindReplica, victim)

	// The zombie, right after it wakes up, must not answer a read with less than what was
	// acknowledged (by the new leader) before the read began.
	zombie := replicav1.NewReplicaServiceClient(c.Dial(c.Addr(testcluster.KindReplica, victim)))
	direct := func(ctx context.Context, from uint64) ([]*triarchv1.Message, error) {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := zombie.Read(rctx, &replicav1.ReadRequest{ChannelId: ch, FromSeq: from, Limit: 1000})
		return resp.GetMessages(), err
	}
	zombieAnswered := 0
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		before := ackedMax.Load()
		got, err := readAll(ctx, direct)
		if err == nil {
			zombieAnswered++
			check(fmt.Sprintf("the resumed replica %d", victim), before, got)
		}
	}
	require.Eventually(t, func() bool { return ackedMax.Load() >= 100 }, time.Minute, 10*time.Millisecond,
		"writes go on after the failover")
	stop()
	wg.Wait()

	mu.Lock()
	require.Empty(t, stale, "stale reads")
	snapshot := make(map[uint64]string, len(acked))
	for k, v := range acked {
		snapshot[k] = v
	}
	mu.Unlock()
	require.Positive(t, reads.Load(), "the readers read")
	t.Logf("replica %d paused 5 s; %d messages acknowledged, %d gateway reads, %d answers from the resumed replica",
		victim, len(snapshot), reads.Load(), zombieAnswered)
	// Every acknowledged message exactly once at its seq; a message whose send was cut off
	// when the writers stopped may be there too, unacknowledged, but only once.
	msgs, err := c.ReadAll(ctx, ch)
	require.NoError(t, err)
	seen := map[string]bool{}
	for i, m := range msgs {
		require.Equal(t, uint64(i+1), m.GetSeq(), "seqs contiguous from 1")
		require.False(t, seen[m.GetClientMsgId()], "%s stored twice", m.GetClientMsgId())
		seen[m.GetClientMsgId()] = true
		if id, ok := snapshot[m.GetSeq()]; ok {
			require.Equal(t, id, m.GetClientMsgId(), "seq %d", m.GetSeq())
		}
	}
	for seq, id := range snapshot {
		require.True(t, seen[id], "acknowledged %s (seq %d) lost", id, seq)
	}
}
