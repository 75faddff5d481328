package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/backoff"
)

// Options tunes a Client. The zero value is the default.
type Options struct {
	// DialOptions are added after the defaults (plaintext transport, 16 MiB messages).
	DialOptions []grpc.DialOption
	// RetryTimeout bounds the retries of a call whose context has no deadline (30 s).
	RetryTimeout time.Duration
	// MinBackoff and MaxBackoff bound the pause between retries (50 ms, 2 s). A server's
	// RetryInfo can lengthen a pause up to MaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Token, when set, is sent with every call as "authorization: Bearer <Token>", for a
	// gateway that authenticates callers (--auth-tokens, --auth-jwks). It travels in the
	// clear unless DialOptions give the connection transport security.
	Token string
}

func (o *Options) defaults() {
	if o.RetryTimeout <= 0 {
		o.RetryTimeout = 30 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 50 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(2*time.Second, o.MinBackoff)
	}
}

// maxMsgSize matches the gateway's message limit; a full 4 MiB batch fits.
const maxMsgSize = 16 << 20

// Client is a connection to a triarch gateway.
type Client struct {
	conn *grpc.ClientConn
	api  triarchv1.TriarchServiceClient
	opts Options
}

// Dial connects to the gateway's gRPC address. It returns once the connection is up, or with
// an error when ctx ends first; give ctx a deadline unless waiting for the gateway to come up
// is what you want.
func Dial(ctx context.Context, addr string, opts Options) (*Client, error) {
	opts.defaults()
	dopts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.MaxCallSendMsgSize(maxMsgSize)),
	}, opts.DialOptions...)
	if opts.Token != "" {
		dopts = append(dopts, grpc.WithPerRPCCredentials(bearer(opts.Token)))
	}
	conn, err := grpc.NewClient(addr, dopts...)
	if err != nil {
		return nil, fmt.Errorf("client: gateway %s: %w", addr, err)
	}
	conn.Connect()
	for st := conn.GetState(); st != connectivity.Ready; st = conn.GetState() {
		if !conn.WaitForStateChange(ctx, st) {
			_ = conn.Close()
			return nil, fmt.Errorf("client: gateway %s not reachable (connection %s): %w", addr, st, ctx.Err())
		}
	}
	return &Client{conn: conn, api: triarchv1.NewTriarchServiceClient(conn), opts: opts}, nil
}

// bearer is a token sent as the authorization metadata of every call.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity is false so that a token works on a plaintext connection too
// (development, or TLS ended by a proxy in front of the gateway).
func (bearer) RequireTransportSecurity() bool { return false }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// API is the generated gRPC client on the same connection, for calls this package does not
// wrap.
func (c *Client) API() triarchv1.TriarchServiceClient { return c.api }

// Outgoing is a message to send. An empty ClientMsgID is filled in by Send.
type Outgoing struct {
	ClientMsgID string
	Sender      string
	Payload     []byte
	Headers     map[string]string
}

// Text is an Outgoing message with a text payload.
func Text(sender, text string) Outgoing { return Outgoing{Sender: sender, Payload: []byte(text)} }

// SendResult is the outcome of one sent message.
type SendResult struct {
	// Seq is the message's sequence number in its channel.
	Seq uint64
	// Duplicate is true when the gateway had seen ClientMsgID before; Seq is then the
	// original one. It is also true when an earlier attempt of the same Send was committed
	// but its answer was lost.
	Duplicate   bool
	ClientMsgID string
}

// Message is a committed message.
type Message struct {
	Channel     string
	Seq         uint64
	ClientMsgID string
	Sender      string
	Payload     []byte
	Headers     map[string]string
	// CommitTime is the leader's clock when the message was proposed.
	CommitTime time.Time
}

func fromProto(m *triarchv1.Message) Message {
	out := Message{
		Channel: m.GetChannelId(), Seq: m.GetSeq(), ClientMsgID: m.GetClientMsgId(), Sender: m.GetSender(),
		Payload: m.GetPayload(), Headers: m.GetHeaders(),
	}
	if m.GetCommitTime() != nil {
		out.CommitTime = m.GetCommitTime().AsTime()
	}
	return out
}

// NewClientMsgID returns a random 128-bit id in hex.
func NewClientMsgID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it panics if the OS source breaks)
	return hex.EncodeToString(b[:])
}

// Send appends msgs, in order, to the channel (the gateway creates a channel that does not
// exist) and returns each message's result once all are committed. Messages without a
// ClientMsgID get one. Unavailable answers are retried with the same ids until ctx ends or
// RetryTimeout passes, so a retry never duplicates a message.
func (c *Client) Send(ctx context.Context, channel string, msgs ...Outgoing) ([]SendResult, error) {
	req := &triarchv1.SendMessagesRequest{ChannelId: channel, Messages: make([]*triarchv1.MessageInput, len(msgs))}
	for i, m := range msgs {
		id := m.ClientMsgID
		if id == "" {
			id = NewClientMsgID()
		}
		req.Messages[i] = &triarchv1.MessageInput{ClientMsgId: id, Sender: m.Sender, Payload: m.Payload, Headers: m.Headers}
	}
	var resp *triarchv1.SendMessagesResponse
	err := c.retry(ctx, func(ctx context.Context) (err error) {
		resp, err = c.api.SendMessages(ctx, req)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("client: send to %s: %w", channel, err)
	}
	out := make([]SendResult, len(resp.GetResults()))
	for i, r := range resp.GetResults() {
		out[i] = SendResult{Seq: r.GetSeq(), Duplicate: r.GetDuplicate(), ClientMsgID: r.GetClientMsgId()}
	}
	return out, nil
}

// ReadResult is one page of a channel.
type ReadResult struct {
	Messages []Message
	// NextSeq is where the next page starts.
	NextSeq uint64
	// LastSeq is the channel's last committed sequence number at the time of the read.
	LastSeq uint64
}

// Read returns at most limit committed messages of the channel from seq from on (limit 0 is
// the gateway's default of 100; at most 1000).
func (c *Client) Read(ctx context.Context, channel string, from uint64, limit int) (*ReadResult, error) {
	if limit < 0 {
		return nil, fmt.Errorf("client: read %s: negative limit %d", channel, limit)
	}
	req := &triarchv1.ReadMessagesRequest{ChannelId: channel, FromSeq: from, Limit: uint32(min(limit, 1<<31))}
	var resp *triarchv1.ReadMessagesResponse
	err := c.retry(ctx, func(ctx context.Context) (err error) {
		resp, err = c.api.ReadMessages(ctx, req)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("client: read %s: %w", channel, err)
	}
	out := &ReadResult{NextSeq: resp.GetNextSeq(), LastSeq: resp.GetLastSeq(), Messages: make([]Message, len(resp.GetMessages()))}
	for i, m := range resp.GetMessages() {
		out.Messages[i] = fromProto(m)
	}
	return out, nil
}

// CreateChannel creates a channel with the given replication factor (0: the gateway's
// default). created is false when it existed already.
func (c *Client) CreateChannel(ctx context.Context, channel string, replication uint32) (created bool, err error) {
	var resp *triarchv1.CreateChannelResponse
	err = c.retry(ctx, func(ctx context.Context) (err error) {
		resp, err = c.api.CreateChannel(ctx, &triarchv1.CreateChannelRequest{ChannelId: channel, ReplicationFactor: replication})
		return err
	})
	if err != nil {
		return false, fmt.Errorf("client: create %s: %w", channel, err)
	}
	return resp.GetCreated(), nil
}

// Cluster returns the cluster's status as the gateway reports it.
func (c *Client) Cluster(ctx context.Context) (*triarchv1.GetClusterResponse, error) {
	var resp *triarchv1.GetClusterResponse
	err := c.retry(ctx, func(ctx context.Context) (err error) {
		resp, err = c.api.GetCluster(ctx, &triarchv1.GetClusterRequest{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("client: cluster status: %w", err)
	}
	return resp, nil
}

// Subscribe calls fn with each committed message of the channel from seq from on (0 means 1),
// in order, each once, until ctx ends (it then returns nil), fn returns an error (returned as
// is), or the gateway refuses the subscription for good (unknown channel, invalid id). When the
// stream breaks it resubscribes from the message after the last one delivered, with backoff,
// for as long as ctx lasts.
func (c *Client) Subscribe(ctx context.Context, channel string, from uint64, fn func(Message) error) error {
	next := max(from, 1)
	bo := c.backoff()
	for {
		delivered, err := c.subscribeOnce(ctx, channel, &next, fn)
		var fe fnError
		if errors.As(err, &fe) {
			return fe.err
		}
		if ctx.Err() != nil {
			return nil
		}
		if !resumable(err) {
			return fmt.Errorf("client: subscribe to %s: %w", channel, err)
		}
		if delivered {
			bo = c.backoff()
		}
		if !pause(ctx, bo, time.Time{}, retryDelay(err)) {
			return nil
		}
	}
}

// fnError carries the subscriber's own error.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

func (c *Client) subscribeOnce(ctx context.Context, channel string, next *uint64, fn func(Message) error) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.api.SubscribeMessages(ctx, &triarchv1.SubscribeMessagesRequest{ChannelId: channel, FromSeq: *next})
	if err != nil {
		return false, err
	}
	delivered := false
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return delivered, status.Error(codes.Unavailable, "the gateway ended the stream")
		}
		if err != nil {
			return delivered, err
		}
		for _, m := range resp.GetMessages() {
			switch {
			case m.GetSeq() < *next:
				continue // delivered before a resume
			case m.GetSeq() > *next:
				return delivered, status.Errorf(codes.Unavailable, "stream skipped from seq %d to %d", *next, m.GetSeq())
			}
			if err := fn(fromProto(m)); err != nil {
				return delivered, fnError{err}
			}
			*next++
			delivered = true
		}
	}
}

// resumable reports whether a broken subscription is worth resuming.
func resumable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Aborted, codes.Internal, codes.Unknown, codes.ResourceExhausted, codes.DeadlineExceeded:
		return true
	}
	return false
}

// retriable reports whether a call's answer is worth another attempt: Unavailable, or
// ResourceExhausted from an overloaded replica, whose RetryInfo sets the pause. A
// ResourceExhausted without one is a quota (the cluster's channel cap): final.
func retriable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable:
		return true
	case codes.ResourceExhausted:
		return retryDelay(err) > 0
	}
	return false
}

// retry runs f until it succeeds, fails with an answer retriable refuses, or the deadline
// (ctx's or RetryTimeout) leaves no room for another attempt.
func (c *Client) retry(ctx context.Context, f func(context.Context) error) error {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(c.opts.RetryTimeout)
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl)
		defer cancel()
	}
	bo := c.backoff()
	var last error // the last retryable answer, what retrying was about
	for {
		err := f(ctx)
		if last != nil && status.Code(err) == codes.DeadlineExceeded {
			// The deadline cut the last attempt short (attempts have no deadline of their own;
			// gRPC may say so a moment before ctx does): the caller learns why it retried until
			// then, whichever of the attempt and the wait was running when the deadline came.
			st := status.Convert(last)
			return status.Errorf(st.Code(), "gave up at the deadline; last answer: %s", st.Message())
		}
		if err == nil || !retriable(err) || ctx.Err() != nil {
			return err
		}
		last = err
		if !pause(ctx, bo, dl, retryDelay(err)) {
			return err
		}
	}
}

// retryDelay is the delay a status's RetryInfo asks for, or 0.
func retryDelay(err error) time.Duration {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

// backoff is a call's pauses between attempts (pkg/backoff).
func (c *Client) backoff() *backoff.Backoff {
	b := backoff.New(c.opts.MinBackoff, c.opts.MaxBackoff)
	return &b
}

// pause waits a jittered, doubling delay (at least hint, at most the maximum, and at most half
// the time left before the deadline dl, none when zero). It returns false, at once, when ctx
// ended or too little time is left for another attempt.
func pause(ctx context.Context, bo *backoff.Backoff, dl time.Time, hint time.Duration) bool {
	return bo.Pause(ctx, dl, hint, 10*time.Millisecond)
}
