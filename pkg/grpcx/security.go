package grpcx

import (
	"fmt"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/triarch-io/triarch/pkg/identity"
	"github.com/triarch-io/triarch/pkg/telemetry"
	"github.com/triarch-io/triarch/pkg/tlsx"
)

// Security is the transport security of one process: mutual TLS with the node's certificate
// on its server and on every connection it dials, and the identity policy enforced on every
// call it serves. A nil *Security is plaintext, as a process without --tls-* flags runs
// (dev mode, tests); its methods then give plaintext options.
type Security struct {
	src    *tlsx.Source
	self   identity.Role
	policy identity.Policy
	public bool
}

// SecurityConfig says what NewSecurity builds.
type SecurityConfig struct {
	Files tlsx.Files
	// Self is the identity the certificate must name: this process's role and node id.
	Self identity.ID
	// Public marks a server whose clients need no certificate (the gateway's public API);
	// the policy still decides what an anonymous caller may call.
	Public bool
	Log    *slog.Logger
}

// NewSecurity loads the TLS files of cfg, or returns nil (plaintext) when none are given.
// The certificate must name cfg.Self: a node started with another node's certificate would
// be refused by its peers, or worse, speak for that node.
func NewSecurity(cfg SecurityConfig) (*Security, error) {
	if !cfg.Files.Enabled() {
		return nil, nil
	}
	src, err := tlsx.NewSource(cfg.Files, cfg.Log)
	if err != nil {
		return nil, err
	}
	if got := src.Identity(); got != cfg.Self {
		return nil, fmt.Errorf("grpcx: --tls-cert %s names %s, but this process is %s", cfg.Files.Cert, got, cfg.Self)
	}
	return &Security{src: src, self: cfg.Self.Role, policy: identity.DefaultPolicy(), public: cfg.Public}, nil
}

// Enabled reports whether s is TLS rather than plaintext.
func (s *Security) Enabled() bool { return s != nil }

// ServerOptions are the options that make a server of NewServer refuse plaintext and
// enforce the policy; none for a nil s.
func (s *Security) ServerOptions() []grpc.ServerOption {
	if s == nil {
		return nil
	}
	return []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(s.src.ServerConfig(s.public))),
		grpc.ChainUnaryInterceptor(s.policy.UnaryServerInterceptor(s.self)),
		grpc.ChainStreamInterceptor(s.policy.StreamServerInterceptor(s.self)),
	}
}

// DialOption is the transport credentials of a connection to a server of one of peers (any
// triarch role when none is given); plaintext for a nil s.
func (s *Security) DialOption(peers ...identity.Role) grpc.DialOption {
	if s == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(s.src.ClientConfig(peers...)))
}

// Dialer is Dial with s's credentials, for connections to servers of one of peers.
func (s *Security) Dialer(tel *telemetry.Telemetry, peers ...identity.Role) func(addr string) (*grpc.ClientConn, error) {
	opt := s.DialOption(peers...)
	return func(addr string) (*grpc.ClientConn, error) { return Dial(addr, tel, opt) }
}
