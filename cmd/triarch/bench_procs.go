package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/triarch-io/triarch/pkg/bench"
)

// openProcTarget starts the dev suite as processes of this binary in a temp directory
// (bench failover --procs, or a pause or black hole with --dev) and waits until its three
// replicas are registered alive.
func openProcTarget(ctx context.Context) (*benchTarget, error) {
	bin, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this binary: %w", err)
	}
	dir, err := os.MkdirTemp("", "triarch-bench-procs-")
	if err != nil {
		return nil, err
	}
	pc, err := bench.StartProcCluster(ctx, bin, dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start the dev suite as processes (logs in %s): %w", dir, err)
	}
	stop := func() {
		pc.Stop()
		_ = os.RemoveAll(dir)
	}
	if err := waitReplicasAlive(ctx, pc.Gateway(), 3); err != nil {
		stop()
		return nil, err
	}
	return &benchTarget{addr: pc.Gateway(), procs: pc, stop: stop}, nil
}

// waitReplicasAlive polls the cluster status through the gateway until n replicas are alive.
func waitReplicasAlive(ctx context.Context, gateway string, n int) error {
	c, err := dialBench(ctx, gateway, failoverBackoff)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(time.Minute)
	for {
		alive := 0
		if cl, err := c.Cluster(ctx); err == nil {
			for _, node := range cl.GetNodes() {
				if node.GetRole() == "replica" && node.GetState() == "alive" {
					alive++
				}
			}
		}
		if alive >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d replicas alive after a minute", alive, n)
		}
		if !sleepUntil(ctx, time.Now().Add(50*time.Millisecond)) {
			return ctx.Err()
		}
	}
}
