package channelctl

import (
	"errors"
	"time"

	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/pkg/tlsx"
)

// Config is the channelctl's configuration.
type Config struct {
	process.Common
	// TLS are the node's CA, certificate and key (--tls-ca, --tls-cert, --tls-key); none
	// means plaintext. With them every connection in and out is mutual TLS, and calls are
	// authorized by the identity in the caller's certificate (pkg/identity).
	TLS tlsx.Files
	// HibernateAfter is how long a channel stays idle before it is unloaded.
	HibernateAfter time.Duration
	// ReplaceDeadAfter is how long a replica node may stay dead before its channels get a new
	// replica elsewhere.
	ReplaceDeadAfter time.Duration
	// BalanceDelay is how long after a replica node comes back or joins leaders are spread
	// again; zero means the controller's default. Not a flag: tests shorten it.
	BalanceDelay time.Duration
	// FailoverBudget is the most channels of a dead node elected at once; zero means the
	// controller's default. Not a flag: tests lower it.
	FailoverBudget int
}

// Validate checks the configuration.
func (c Config) Validate() error {
	errs := []error{c.Common.Validate(), c.TLS.Validate()}
	if c.HibernateAfter <= 0 {
		errs = append(errs, errors.New("--hibernate-after must be positive"))
	}
	if c.ReplaceDeadAfter <= 0 {
		errs = append(errs, errors.New("--replace-dead-after must be positive"))
	}
	return errors.Join(errs...)
}
