package grpcx

import (
	"time"

	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/keepalive"
)

// DefaultMaxMsgSize bounds a single gRPC message in either direction. gRPC's
// own 4 MiB receive limit is too small for batched replication frames that
// carry many channels' entries; the limit still stops a malformed or hostile
// peer from making us allocate without bound.
const DefaultMaxMsgSize = 16 << 20

// Keepalive between nodes. Peer streams (replication, arbiter watches) live
// for the life of the process and may sit idle; pings find a dead peer or a
// silently dropped NAT/conntrack entry in seconds, not at the next write.
// Liveness in the failure-detection sense is the arbiter's lease business;
// this only keeps transports honest.
const (
	clientPingInterval = 10 * time.Second
	pingTimeout        = 5 * time.Second
	serverPingInterval = 15 * time.Second
	// minClientPingInterval must not exceed clientPingInterval, or servers
	// would answer our own clients' pings with GOAWAY "too_many_pings".
	minClientPingInterval = 5 * time.Second
)

var (
	serverKeepalive = keepalive.ServerParameters{
		// No MaxConnectionIdle or MaxConnectionAge: closing a healthy peer
		// connection would only interrupt streams that must stay up.
		Time:    serverPingInterval,
		Timeout: pingTimeout,
	}
	serverEnforcement = keepalive.EnforcementPolicy{
		MinTime: minClientPingInterval,
		// Peers keep connections open between streams and ping them, so a
		// node can tell a dead peer before it needs to send.
		PermitWithoutStream: true,
	}
	clientKeepalive = keepalive.ClientParameters{
		Time:                clientPingInterval,
		Timeout:             pingTimeout,
		PermitWithoutStream: true,
	}
)

// connectBackoff reconnects quickly to a restarted node. gRPC's default caps
// the delay at 120 s, far longer than a node restart or a failover, which
// would leave a peer link down long after its node is back.
var connectBackoff = backoff.Config{
	BaseDelay:  100 * time.Millisecond,
	Multiplier: 1.6,
	Jitter:     0.2,
	MaxDelay:   5 * time.Second,
}

const minConnectTimeout = 5 * time.Second
