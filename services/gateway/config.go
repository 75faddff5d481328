package gateway

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/triarch-io/triarch/pkg/auth"
	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/pkg/tlsx"
)

// Config is the gateway's configuration. Common.Listen is the gRPC address.
type Config struct {
	process.Common
	// TLS are the node's CA, certificate and key (--tls-ca, --tls-cert, --tls-key); none
	// means plaintext. With them the public port takes TLS only, from clients with or without
	// a certificate (the public API is anyone's; nothing else is), and the connections to
	// channelctls, replicas and arbiters are mutual TLS as this gateway's identity.
	TLS tlsx.Files
	// HTTPAddr serves REST/JSON and /openapi.json.
	HTTPAddr string
	// DefaultReplication is the replication factor of channels created implicitly by a send,
	// and of those CreateChannel creates without one.
	DefaultReplication uint32
	// NoImplicitCreate turns off creating a channel on its first send (--create-channels=false):
	// a send to a channel that does not exist then answers NotFound, as reads and
	// subscriptions always do, and only CreateChannel (POST /v1/channels) creates. The zero
	// value keeps implicit creation, the default.
	NoImplicitCreate bool
	// Channelctls are the gRPC addresses of the channel control services the gateway resolves
	// channels through (--channelctls). Empty is allowed while the gateway cannot yet learn them
	// from the arbiter: it then serves, reports not ready, and answers every channel call
	// Unavailable, saying that no channelctl is configured.
	Channelctls []string
	// RequestTimeout bounds a call whose caller set no deadline, retries included
	// (--request-timeout, 5 s when zero). It is also how long a subscription may stay
	// disconnected while the gateway looks for the channel's new leader.
	RequestTimeout time.Duration
	// Auth says how callers authenticate (--auth-tokens, --auth-jwks, --auth-jwt-issuer,
	// --auth-jwt-audience); with neither file set, everyone may do everything.
	Auth auth.Config
	// Quota bounds each caller's requests, creations and subscriptions (quota.go); zero
	// fields are no limit.
	Quota QuotaConfig
}

// Default tuning.
const (
	DefaultRequestTimeout = 5 * time.Second
)

// Defaults fills unset tuning fields.
func (c *Config) Defaults() {
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	errs := []error{c.Common.Validate(), c.TLS.Validate()}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("--http-addr %q: %w", c.HTTPAddr, err))
	}
	if c.DefaultReplication == 0 {
		errs = append(errs, errors.New("--default-replication must be at least 1"))
	}
	if c.DefaultReplication > MaxReplication {
		errs = append(errs, fmt.Errorf("--default-replication %d: at most %d", c.DefaultReplication, MaxReplication))
	}
	for _, a := range c.Channelctls {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("--channelctls: %q: %w", a, err))
		}
	}
	if c.RequestTimeout < 0 {
		errs = append(errs, errors.New("--request-timeout must not be negative"))
	}
	return errors.Join(errs...)
}
