package channelctl

import (
	"errors"
	"time"

	"github.com/triarch-io/triarch/pkg/process"
)

// Config is the channelctl's configuration.
type Config struct {
	process.Common
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
	errs := []error{c.Common.Validate()}
	if c.HibernateAfter <= 0 {
		errs = append(errs, errors.New("--hibernate-after must be positive"))
	}
	if c.ReplaceDeadAfter <= 0 {
		errs = append(errs, errors.New("--replace-dead-after must be positive"))
	}
	return errors.Join(errs...)
}
