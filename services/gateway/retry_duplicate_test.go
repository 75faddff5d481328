package gateway_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/services/gateway"
)

// lossyReplicas wraps the router's connections to the stack's replicas: an Append it is told
// to lose reaches the replica, which commits it, and its answer is replaced by Unavailable, as
// when the attempt timed out or the leader died before answering.
type lossyReplicas struct {
	replicas map[string]bool

	mu     sync.Mutex
	lose   int          // answers still to lose
	before func() error // runs before an answer is lost (e.g. kills the leader)
	nonces []uint64     // of every Append attempt that reached a replica, in order
}

type lossyConn struct {
	*grpc.ClientConn
	l *lossyReplicas
}

func (c lossyConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	err := c.ClientConn.Invoke(ctx, method, args, reply, opts...)
	req, ok := args.(*replicav1.AppendRequest)
	if !ok {
		return err
	}
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	c.l.nonces = append(c.l.nonces, req.GetNonce())
	if err != nil || c.l.lose == 0 {
		return err
	}
	c.l.lose--
	if c.l.before != nil {
		if err := c.l.before(); err != nil {
			return err
		}
	}
	return status.Error(codes.Unavailable, "test: the answer was lost")
}

func (l *lossyReplicas) dial(addr string) (grpc.ClientConnInterface, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil || !l.replicas[addr] {
		return conn, err
	}
	return lossyConn{ClientConn: conn, l: l}, nil
}

// attempts returns the nonces of the Append attempts since the last call.
func (l *lossyReplicas) attempts() []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.nonces
	l.nonces = nil
	return out
}

func (l *lossyReplicas) loseNext(before func() error) {
	l.mu.Lock()
	l.lose, l.before = 1, before
	l.mu.Unlock()
}

// Issue 13 item 7: a client sends a fresh client_msg_id once; the gateway's first attempt is
// committed but its answer lost, and the gateway's own retry finds it committed. The client
// must be told duplicate=false (with the committed seq), at the same leader and at a new one
// elected because the first died; a second send of the same id by the client is a duplicate.
func TestGatewayRetryOfItsOwnAttemptIsNotADuplicate(t *testing.T) {
	s := newStack(t)
	ctx := tctx(t)
	const ch = "retry:dup"
	_, err := s.api.CreateChannel(ctx, &triarchv1.CreateChannelRequest{ChannelId: ch, ReplicationFactor: 3})
	require.NoError(t, err)

	l := &lossyReplicas{replicas: map[string]bool{}}
	for _, a := range s.addrs {
		l.replicas[a] = true
	}
	r, err := gateway.NewRouter(gateway.RouterConfig{Channelctls: []string{s.ctl.addr}, Dial: l.dial})
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Close() })

	// The answer is lost; the leader stays.
	l.loseNext(nil)
	rs, err := r.Append(ctx, ch, inputs("fresh-1", "fresh-2"))
	require.NoError(t, err)
	require.Len(t, rs, 2)
	for i, res := range rs {
		require.Equal(t, uint64(i+1), res.GetSeq())
		require.False(t, res.GetDuplicate(), "the client sent fresh-%d once; the retry was the gateway's", i+1)
	}
	sent := l.attempts()
	require.Len(t, sent, 2, "the first attempt and the gateway's retry")
	require.NotZero(t, sent[0])
	require.Equal(t, sent[0], sent[1], "the retry carries the send's nonce")

	// The answer is lost because the leader dies right after committing: the retry goes to
	// the leader elected in its place.
	leader := s.ctl.leaderOf(ch)
	l.loseNext(func() error { return s.stopReplica(leader) })
	rs, err = r.Append(ctx, ch, inputs("fresh-3"))
	require.NoError(t, err)
	require.Equal(t, uint64(3), rs[0].GetSeq())
	require.False(t, rs[0].GetDuplicate(), "the gateway's retry at the new leader")
	require.NotEqual(t, leader, s.ctl.leaderOf(ch), "a new leader answered the retry")
	sent = l.attempts()
	require.GreaterOrEqual(t, len(sent), 2)
	for _, n := range sent[1:] {
		require.Equal(t, sent[0], n, "every attempt of the send carries its nonce")
	}

	// The client sends fresh-1 again: a new send, a new nonce, a duplicate with its seq.
	rs, err = r.Append(ctx, ch, inputs("fresh-1", "fresh-4"))
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 4}, []uint64{rs[0].GetSeq(), rs[1].GetSeq()})
	require.True(t, rs[0].GetDuplicate(), "the client's own resend")
	require.False(t, rs[1].GetDuplicate())
	again := l.attempts()
	require.Len(t, again, 1)
	require.NotEqual(t, sent[0], again[0], "another send, another nonce")
	// Through the public API too.
	resp, err := s.api.SendMessages(ctx, &triarchv1.SendMessagesRequest{ChannelId: ch, Messages: inputs("fresh-3")})
	require.NoError(t, err)
	require.Equal(t, uint64(3), resp.GetResults()[0].GetSeq())
	require.True(t, resp.GetResults()[0].GetDuplicate())
	requireContiguous(t, s.readAllGRPC(ch), 4)
}
