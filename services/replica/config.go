package replica

import (
	"errors"
	"time"

	"github.com/triarch-io/triarch/pkg/process"
)

// Config is the replica's configuration.
type Config struct {
	process.Common
	// Zone labels the node's failure domain for placement.
	Zone string
	// DedupWindow and DedupMaxIDs bound how long and how many client_msg_ids per channel are
	// remembered for idempotent sends.
	DedupWindow time.Duration
	DedupMaxIDs int
}

// Validate checks the configuration.
func (c Config) Validate() error {
	errs := []error{c.Common.Validate()}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is required"))
	}
	if c.DedupWindow <= 0 {
		errs = append(errs, errors.New("--dedup-window must be positive"))
	}
	if c.DedupMaxIDs <= 0 {
		errs = append(errs, errors.New("--dedup-max-ids must be positive"))
	}
	return errors.Join(errs...)
}
