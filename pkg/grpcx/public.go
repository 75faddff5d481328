package grpcx

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// The public API's server (the gateway's gRPC port) faces clients, not peers: many of them,
// some abandoned, some behind load balancers that should see connections come and go.
const (
	// PublicMaxConcurrentStreams bounds the calls and subscriptions open on one client
	// connection; a client past it queues its new calls (gRPC's own flow control) rather than
	// making the gateway hold unbounded state for one connection.
	PublicMaxConcurrentStreams = 4096
	// PublicMaxConnectionIdle closes a client connection without calls for that long.
	PublicMaxConnectionIdle = 5 * time.Minute
	// PublicMaxConnectionAge and its grace close every client connection after about an
	// hour (with jitter, which gRPC adds), so that clients spread again over the gateways a
	// load balancer adds; calls still open after the grace are cut, and subscriptions resume
	// (pkg/client does, from the next seq).
	PublicMaxConnectionAge      = time.Hour
	PublicMaxConnectionAgeGrace = time.Minute
)

// PublicServerOptions are the options of a server of the public API, applied after NewServer's
// (its keepalive parameters replace the peer-oriented ones).
func PublicServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(PublicMaxConcurrentStreams),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle:     PublicMaxConnectionIdle,
			MaxConnectionAge:      PublicMaxConnectionAge,
			MaxConnectionAgeGrace: PublicMaxConnectionAgeGrace,
			Time:                  serverPingInterval,
			Timeout:               pingTimeout,
		}),
	}
}
