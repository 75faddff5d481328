package liveness

import (
	"errors"
	"fmt"
	"time"
)

// Config holds the timing of leases and failure detection. The package doc explains how the
// defaults fit together; change them together.
type Config struct {
	// LeaseTTL is how long a heartbeat keeps a node's lease. Fixed, not adaptive: replicas
	// rely on it to know when to stop serving.
	LeaseTTL time.Duration
	// DriftMargin is how long after lease expiry the arbiter waits before it may declare
	// death: clock drift and the node's delay in noticing its own expiry.
	DriftMargin time.Duration
	// BaseInterval is the heartbeat interval before enough samples are measured.
	BaseInterval time.Duration
	// MinInterval and MaxInterval bound the adaptive interval.
	MinInterval time.Duration
	MaxInterval time.Duration
	// PeerSilence: a peer that has not heard from a node for this long counts as unable to
	// reach it, whatever its reachable flag says.
	PeerSilence time.Duration
	// ReportMaxAge: peer reports older than this are ignored.
	ReportMaxAge time.Duration
	// ResendAfter: a decision not yet seen committed (Observe) is proposed again after this.
	ResendAfter time.Duration
	// EvaluateEvery is how often the leader should call Evaluate; it is part of the detection
	// latency budget.
	EvaluateEvery time.Duration
	// Window is how many recent samples the statistics keep; MinSamples how many they need
	// before the interval adapts.
	Window     int
	MinSamples int
	// MinStdDev floors the measured noise, so a perfectly calm history does not make the
	// statistics overconfident.
	MinStdDev time.Duration
	// JitterSigmas is how many standard deviations of noise an interval leaves room for.
	JitterSigmas float64
}

// DefaultConfig returns the defaults described in the package doc.
func DefaultConfig() Config {
	return Config{
		LeaseTTL:      600 * time.Millisecond,
		DriftMargin:   150 * time.Millisecond,
		BaseInterval:  150 * time.Millisecond,
		MinInterval:   50 * time.Millisecond,
		MaxInterval:   250 * time.Millisecond,
		PeerSilence:   400 * time.Millisecond,
		ReportMaxAge:  600 * time.Millisecond,
		ResendAfter:   600 * time.Millisecond,
		EvaluateEvery: 25 * time.Millisecond,
		Window:        64,
		MinSamples:    8,
		MinStdDev:     5 * time.Millisecond,
		JitterSigmas:  3,
	}
}

// Validate checks that the timings are consistent with the safety rule.
func (c Config) Validate() error {
	var errs []error
	if c.LeaseTTL <= 0 {
		errs = append(errs, fmt.Errorf("lease TTL %v must be positive", c.LeaseTTL))
	}
	if c.DriftMargin < 0 {
		errs = append(errs, fmt.Errorf("drift margin %v must not be negative", c.DriftMargin))
	}
	if c.MinInterval <= 0 || c.MinInterval > c.BaseInterval || c.BaseInterval > c.MaxInterval {
		errs = append(errs, fmt.Errorf("intervals must satisfy 0 < min %v ≤ base %v ≤ max %v", c.MinInterval, c.BaseInterval, c.MaxInterval))
	}
	// Two heartbeats per TTL at the slowest: one may be lost without the lease expiring.
	if 2*c.MaxInterval > c.LeaseTTL {
		errs = append(errs, fmt.Errorf("max interval %v must be at most half the lease TTL %v", c.MaxInterval, c.LeaseTTL))
	}
	if c.PeerSilence <= 0 || c.ReportMaxAge <= 0 || c.ResendAfter <= 0 || c.EvaluateEvery <= 0 {
		errs = append(errs, errors.New("peer silence, report max age, resend after and evaluate every must be positive"))
	}
	if c.MinSamples < 2 || c.Window < c.MinSamples {
		errs = append(errs, fmt.Errorf("need 2 ≤ min samples %d ≤ window %d", c.MinSamples, c.Window))
	}
	if c.MinStdDev < 0 || c.JitterSigmas < 0 {
		errs = append(errs, errors.New("min stddev and jitter sigmas must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("liveness config: %w", err)
	}
	return nil
}
