package testcluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	channelctlv1 "github.com/triarch-io/triarch/gen/triarch/channelctl/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

// attemptTimeout bounds one resolve-and-append attempt of Send: generous, since a loaded
// machine under -race can take seconds for a call that normally takes milliseconds.
const attemptTimeout = 10 * time.Second

// Resolve asks the running channelctls, in random order as a client spreading its calls
// would, for the channel's leader, creating the channel if it is missing; stale names a
// leader the caller found not leading.
func (c *Cluster) Resolve(ctx context.Context, channel string, stale uint64) (*channelctlv1.ResolveChannelResponse, error) {
	ids := c.Running(KindChannelctl)
	rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	lastErr := errors.New("testcluster: no channelctl is running")
	for _, id := range ids {
		cl := channelctlv1.NewChannelControlServiceClient(c.Dial(c.Addr(KindChannelctl, id)))
		resp, err := cl.ResolveChannel(ctx, &channelctlv1.ResolveChannelRequest{ChannelId: channel, CreateIfMissing: true,
			ReplicationFactor: c.cfg.replication, StaleLeaderNodeId: stale})
		if err == nil {
			return resp, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// Send sends one message (payload = id) to the channel through its leader, re-resolving
// across leader changes as the gateway does, until it is acknowledged or ctx ends; it
// returns the message's seq.
func (c *Cluster) Send(ctx context.Context, channel, id string) (uint64, error) {
	var stale uint64
	for {
		// Each attempt has its own deadline: a paused (SIGSTOP) leader holds its connection
		// open and would otherwise keep the call until ctx ends. A retry is safe: the same
		// client_msg_id comes back as a duplicate with its original seq.
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		res, err := c.Resolve(actx, channel, stale)
		if err == nil {
			cl := replicav1.NewReplicaServiceClient(c.Dial(res.GetLeaderAddress()))
			var resp *replicav1.AppendResponse
			resp, err = cl.Append(actx, &replicav1.AppendRequest{ChannelId: channel,
				Messages: []*triarchv1.MessageInput{{ClientMsgId: id, Payload: []byte(id)}}})
			if err == nil {
				cancel()
				return resp.GetResults()[0].GetSeq(), nil
			}
			stale = res.GetLeaderNodeId()
		}
		cancel()
		if ctx.Err() != nil {
			return 0, errors.Join(err, ctx.Err())
		}
		// A pause between attempts, not a wait for a condition: a failover takes a while,
		// and hammering the channelctls meanwhile only slows it.
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ReadAll reads every committed message of the channel from its leader.
//
// Like a gateway, it tries again (resolving anew) while the answer is Unavailable or NotFound:
// a leader just elected or woken serves reads only once it has applied an entry of its own
// term, and a leader may move between the resolve and the read.
func (c *Cluster) ReadAll(ctx context.Context, channel string) ([]*triarchv1.Message, error) {
	for {
		msgs, err := c.readAllOnce(ctx, channel)
		switch status.Code(err) {
		case codes.OK:
			return msgs, nil
		case codes.Unavailable, codes.NotFound:
			if ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
		}
		return nil, err
	}
}

func (c *Cluster) readAllOnce(ctx context.Context, channel string) ([]*triarchv1.Message, error) {
	res, err := c.Resolve(ctx, channel, 0)
	if err != nil {
		return nil, err
	}
	cl := replicav1.NewReplicaServiceClient(c.Dial(res.GetLeaderAddress()))
	var out []*triarchv1.Message
	from := uint64(1)
	for {
		resp, err := cl.Read(ctx, &replicav1.ReadRequest{ChannelId: channel, FromSeq: from, Limit: 1000})
		if err != nil {
			return nil, status.Errorf(status.Code(err), "read %s: %v", channel, err)
		}
		out = append(out, resp.GetMessages()...)
		if len(resp.GetMessages()) == 0 {
			return out, nil
		}
		from = resp.GetMessages()[len(resp.GetMessages())-1].GetSeq() + 1
	}
}

// ExactlyOnce checks, off the test goroutine too, that the channel holds exactly the
// acknowledged messages (seq -> client_msg_id) at their seqs, contiguous from 1.
func (c *Cluster) ExactlyOnce(ctx context.Context, channel string, acked map[uint64]string) error {
	msgs, err := c.ReadAll(ctx, channel)
	if err != nil {
		return err
	}
	for i, m := range msgs {
		if m.GetSeq() != uint64(i+1) {
			return fmt.Errorf("%s: message %d has seq %d", channel, i, m.GetSeq())
		}
		if want, ok := acked[m.GetSeq()]; !ok || want != m.GetClientMsgId() {
			return fmt.Errorf("%s: seq %d holds %q, acknowledged %q", channel, m.GetSeq(), m.GetClientMsgId(), want)
		}
	}
	if len(msgs) != len(acked) {
		return fmt.Errorf("%s: %d messages, %d acknowledged", channel, len(msgs), len(acked))
	}
	return nil
}

// RequireExactlyOnce is ExactlyOnce on the test goroutine, failing at the first difference.
func (c *Cluster) RequireExactlyOnce(t testing.TB, ctx context.Context, channel string, acked map[uint64]string) {
	t.Helper()
	msgs, err := c.ReadAll(ctx, channel)
	require.NoError(t, err)
	require.Len(t, msgs, len(acked), channel)
	for i, m := range msgs {
		require.Equal(t, uint64(i+1), m.GetSeq(), channel)
		require.Equal(t, acked[m.GetSeq()], m.GetClientMsgId(), "%s seq %d", channel, m.GetSeq())
	}
}

// AckLedger sends to numbered channels through a cluster and remembers, per channel, what was
// acknowledged at which seq, so that Verify can check every channel exactly once. It is for
// the test goroutine.
type AckLedger struct {
	t     testing.TB
	c     *Cluster
	ctx   context.Context
	name  func(i int) string
	acked []map[uint64]string
}

// NewAckLedger keeps the ledger of channels prefix0 .. prefix<channels-1>.
func (c *Cluster) NewAckLedger(t testing.TB, ctx context.Context, channels int, prefix string) *AckLedger {
	l := &AckLedger{t: t, c: c, ctx: ctx, name: func(i int) string { return fmt.Sprintf("%s%d", prefix, i) },
		acked: make([]map[uint64]string, channels)}
	for i := range l.acked {
		l.acked[i] = map[uint64]string{}
	}
	return l
}

// Name is channel i's id.
func (l *AckLedger) Name(i int) string { return l.name(i) }

// Len is the number of channels.
func (l *AckLedger) Len() int { return len(l.acked) }

// Send sends one message tagged tag to channel i and records its seq.
func (l *AckLedger) Send(i int, tag string) {
	l.t.Helper()
	id := fmt.Sprintf("%s-%s", l.name(i), tag)
	seq, err := l.c.Send(l.ctx, l.name(i), id)
	require.NoError(l.t, err, id)
	l.acked[i][seq] = id
}

// Record adds a message acknowledged outside the ledger (by a writer of the test's own) at seq
// on channel i.
func (l *AckLedger) Record(i int, seq uint64, id string) { l.acked[i][seq] = id }

// SendAll sends one message tagged tag to every channel.
func (l *AckLedger) SendAll(tag string) {
	l.t.Helper()
	for i := range l.acked {
		l.Send(i, tag)
	}
}

// Verify reads every channel back: every acknowledged message, once, at its seq.
func (l *AckLedger) Verify() {
	l.t.Helper()
	for i := range l.acked {
		l.c.RequireExactlyOnce(l.t, l.ctx, l.name(i), l.acked[i])
	}
}
