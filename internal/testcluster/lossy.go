package testcluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/triarch-io/triarch/internal/lossyfs"
)

// Power loss: with LossyDisks(), each replica's data directory is a lossyfs mount (served by
// the test process) of a backing directory of its own, which stands for the disk. PowerLoss
// kills the replica and cuts the mount's power, so the disk keeps only what the replica
// fsynced; Restart mounts the disk again first.

// LossyDisks puts every replica's data directory on a lossy filesystem (internal/lossyfs), so
// that PowerLoss can discard what a replica wrote without syncing. Process mode only (it
// implies Processes()): a process that serves a FUSE mount must not use it through a
// mapping, as Badger does. Without FUSE, Start skips the test (LossyDisksAvailable says so
// beforehand).
func LossyDisks() Option { return func(c *config) { c.processes, c.lossy = true, true } }

// LossyDisksAvailable reports why lossy disks cannot be mounted here (no /dev/fuse, no
// permission), or nil: it mounts one in a temporary directory and unmounts it.
func LossyDisksAvailable() error {
	backing, err := os.MkdirTemp("", "testcluster-fuse-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(backing)
	mnt := filepath.Join(backing, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(backing, "disk"), 0o755); err != nil {
		return err
	}
	fs, err := lossyfs.Mount(filepath.Join(backing, "disk"), mnt)
	if err != nil {
		return err
	}
	return fs.Close()
}

// disk is a replica's lossy disk: the backing directory and, while mounted, the mount at the
// node's data directory.
type disk struct {
	backing string
	fs      *lossyfs.FS
}

// mountDisk mounts the node's disk at its data directory unless it is mounted; it skips the
// test where FUSE is unavailable.
func (c *Cluster) mountDisk(n *node) {
	c.t.Helper()
	c.mu.Lock()
	d := n.disk
	c.mu.Unlock()
	if d == nil || d.fs != nil {
		return
	}
	fs, err := lossyfs.Mount(d.backing, n.dir)
	if errors.Is(err, lossyfs.ErrUnavailable) {
		c.t.Skipf("testcluster: lossy disks need FUSE: %v", err)
	}
	require.NoError(c.t, err, "testcluster: mount the disk of %s %d", n.kind, n.id)
	c.mu.Lock()
	d.fs = fs
	c.mu.Unlock()
}

// PowerLoss kills a replica whose disk is lossy (SIGKILL) and cuts the disk's power: every
// write it did not fsync is lost, as in a power failure of its machine. Restart mounts the
// disk again. It returns what the disk saw since it was mounted (Stats.DroppedBytes is what
// the cut lost).
func (c *Cluster) PowerLoss(kind Kind, id uint64) lossyfs.Stats {
	c.t.Helper()
	n := c.node(kind, id)
	c.mu.Lock()
	d := n.disk
	c.mu.Unlock()
	require.NotNil(c.t, d, "testcluster: %s %d has no lossy disk (LossyDisks())", kind, id)
	c.Kill(kind, id)
	st, err := c.cutPower(d, n.dir)
	require.NoError(c.t, err, "testcluster: power loss of %s %d", kind, id)
	return st
}

// cutPower crashes the disk's mount if it is mounted, and returns once the mount has left
// this process's mount table (by then the unsynced writes are discarded).
//
// It does not wait for Crash to return: Crash waits for the FUSE server to stop, which happens
// only when no mount table holds the mount any more. In a Netns() cluster each process runs in
// a mount namespace of its own (`ip netns exec` unshares one, and the root's mounts are private
// here, so an unmount does not reach the copies), and every process started while the disk was
// mounted holds a copy until it exits. Those copies are never used; the server stops once their
// processes have exited, at the latest when the cluster stops.
func (c *Cluster) cutPower(d *disk, mountpoint string) (lossyfs.Stats, error) {
	c.mu.Lock()
	fs := d.fs
	d.fs = nil
	c.mu.Unlock()
	if fs == nil {
		return lossyfs.Stats{}, nil
	}
	type crashed struct {
		st  lossyfs.Stats
		err error
	}
	done := make(chan crashed, 1)
	go func() {
		st, err := fs.Crash()
		done <- crashed{st, err}
	}()
	deadline := time.Now().Add(stopTimeout)
	for {
		select {
		case r := <-done:
			return r.st, r.err
		default:
		}
		gone, err := unmounted(mountpoint)
		if err != nil {
			return lossyfs.Stats{}, err
		}
		if gone {
			return fs.Stats(), nil
		}
		if time.Now().After(deadline) {
			return lossyfs.Stats{}, fmt.Errorf("lossy disk at %s still mounted %v after its power cut", mountpoint, stopTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// unmounted reports whether nothing is mounted at dir in this process's mount table.
func unmounted(dir string) (bool, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("reading the mount table: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		// Field 5 is the mount point (spaces and the like escaped as octal, which a test's
		// temporary directory does not have).
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return false, nil
		}
	}
	return true, nil
}

// Wipe kills a replica and loses its data directory, as when its disk is replaced; Restart
// starts it empty. On a lossy disk the mount goes too (it is mounted again, empty, by Restart).
func (c *Cluster) Wipe(kind Kind, id uint64) {
	c.t.Helper()
	c.Kill(kind, id)
	n := c.node(kind, id)
	c.mu.Lock()
	d := n.disk
	c.mu.Unlock()
	if d == nil {
		require.NoError(c.t, os.RemoveAll(n.dir))
		return
	}
	_, err := c.cutPower(d, n.dir)
	require.NoError(c.t, err)
	require.NoError(c.t, os.RemoveAll(d.backing))
	require.NoError(c.t, os.Mkdir(d.backing, 0o755))
}

// unmountDisks shuts every mounted disk down cleanly (everything pending is synced), after
// the nodes stopped and before the temporary directory goes.
func (c *Cluster) unmountDisks() {
	c.mu.Lock()
	var disks []*disk
	for _, n := range c.nodes {
		if n.disk != nil {
			disks = append(disks, n.disk)
		}
	}
	c.mu.Unlock()
	for _, d := range disks {
		c.mu.Lock()
		fs := d.fs
		d.fs = nil
		c.mu.Unlock()
		if fs != nil {
			if err := fs.Close(); err != nil {
				c.t.Errorf("testcluster: %v", fmt.Errorf("unmount %s: %w", d.backing, err))
			}
		}
	}
}
