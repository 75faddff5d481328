package lossyfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// FS is a mounted lossy filesystem.
type FS struct {
	backing, mountpoint string
	server              *fuse.Server
	unmountOnce         sync.Once
	unmountErr          error

	hold     func(name string) bool
	released chan struct{} // closed by Crash and Close: held syncs go on
	release  sync.Once

	mu      sync.Mutex
	files   map[fileKey]*fileState
	crashed bool
	stats   Stats
}

// Stats counts what reached the filesystem.
type Stats struct {
	// Fsyncs counts FUSE FSYNC requests on files (fsync, fdatasync, msync with MS_SYNC).
	Fsyncs int64
	// SyncedBytes counts bytes of pages written to the backing directory by those syncs.
	SyncedBytes int64
	// DroppedBytes counts bytes of pages Crash discarded.
	DroppedBytes int64
}

// ErrUnavailable wraps the reason a mount could not be made (no /dev/fuse, no permission, no
// FUSE in the kernel): callers that test with lossyfs skip on it.
var ErrUnavailable = errors.New("lossyfs: FUSE is not available")

// Option configures Mount.
type Option func(*FS)

// HoldSyncs makes syncs of the files whose base name matches wait until Crash (when they fail)
// or Close (when they complete): a disk that has not finished them when the power fails. A test
// uses it to keep a window open that is otherwise short, such as the time a database takes to
// flush a table before it may forget the log that the table replaces.
func HoldSyncs(match func(name string) bool) Option {
	return func(l *FS) { l.hold = match }
}

// Mount serves backing (an existing directory) at mountpoint (an existing empty directory).
// As root it mounts with mount(2) itself; otherwise it needs fusermount3 (or fusermount).
func Mount(backing, mountpoint string, opts ...Option) (*FS, error) {
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	} else {
		f.Close()
	}
	lfs := &FS{backing: backing, mountpoint: mountpoint, files: make(map[fileKey]*fileState),
		released: make(chan struct{})}
	for _, o := range opts {
		o(lfs)
	}
	root := &fs.LoopbackRoot{Path: backing}
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		return nil, fmt.Errorf("lossyfs: %w", err)
	}
	root.Dev = uint64(st.Dev)
	root.NewNode = func(r *fs.LoopbackRoot, _ *fs.Inode, _ string, _ *syscall.Stat_t) fs.InodeEmbedder {
		return &node{LoopbackNode: fs.LoopbackNode{RootData: r}, fs: lfs}
	}
	rootNode := root.NewNode(root, nil, "", &st)
	root.RootNode = rootNode
	timeout := time.Second
	server, err := fs.Mount(mountpoint, rootNode, &fs.Options{
		EntryTimeout: &timeout,
		AttrTimeout:  &timeout,
		MountOptions: fuse.MountOptions{
			FsName:      "lossyfs",
			Name:        "lossyfs",
			DirectMount: true,
			// Xattrs (security labels) only add round trips.
			DisableXAttrs: true,
			Debug:         os.Getenv("LOSSYFS_DEBUG") != "",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: mount %s: %v", ErrUnavailable, mountpoint, err)
	}
	lfs.server = server
	return lfs, nil
}

// fileKey identifies a backing file.
type fileKey struct{ dev, ino uint64 }

func keyOf(st *syscall.Stat_t) fileKey { return fileKey{uint64(st.Dev), st.Ino} }

// state returns the pending state of a regular file, opening path to create it; fresh replaces
// any state a previous file with the same inode number left.
func (l *FS) state(k fileKey, path string, fresh bool) (*fileState, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.crashed {
		return nil, syscall.EIO
	}
	if s := l.files[k]; s != nil && !fresh {
		return s, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	s, err := newFileState(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	if old := l.files[k]; old != nil {
		old.backing.Close()
	}
	l.files[k] = s
	return s, nil
}

// existing returns a file's pending state if it has one.
func (l *FS) existing(k fileKey) *fileState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.files[k]
}

// forget drops the state of a file that no longer has a name.
func (l *FS) forget(k fileKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.files[k]; s != nil {
		s.backing.Close()
		delete(l.files, k)
	}
}

func (l *FS) alive() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.crashed
}

// waitHeld blocks a sync of name that HoldSyncs holds until the power is cut or the filesystem
// closed; it reports whether the sync may go on.
func (l *FS) waitHeld(ctx context.Context, name string) bool {
	if l.hold == nil || !l.hold(name) {
		return true
	}
	select {
	case <-l.released:
	case <-ctx.Done():
		return false
	}
	return l.alive()
}

func (l *FS) synced(n int64) {
	l.mu.Lock()
	l.stats.Fsyncs++
	l.stats.SyncedBytes += n
	l.mu.Unlock()
}

// Stats returns the counters so far.
func (l *FS) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// Crash cuts the power: every write not synced is discarded, every later request fails with
// EIO, and the filesystem is unmounted. The backing directory then holds exactly what was
// synced (and every namespace change, which is durable at once). Stop the processes using the
// mount first: writes the kernel flushes for them after the cut are discarded, but their
// pending system calls fail.
func (l *FS) Crash() (Stats, error) {
	l.mu.Lock()
	if !l.crashed {
		l.crashed = true
		l.release.Do(func() { close(l.released) })
		for _, s := range l.files {
			l.stats.DroppedBytes += s.drop()
			s.backing.Close()
		}
		clear(l.files)
	}
	st := l.stats
	l.mu.Unlock()
	return st, l.unmount()
}

// Close is a clean shutdown: the filesystem is unmounted (the kernel writes its page cache
// back on the way) and every pending write is synced.
func (l *FS) Close() error {
	l.release.Do(func() { close(l.released) })
	uerr := l.unmount()
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	if !l.crashed {
		l.crashed = true
		for _, s := range l.files {
			if _, err := s.sync(); err != nil {
				errs = append(errs, err)
			}
			s.backing.Close()
		}
		clear(l.files)
	}
	return errors.Join(append(errs, uerr)...)
}

func (l *FS) unmount() error {
	l.unmountOnce.Do(func() { l.unmountErr = l.doUnmount() })
	return l.unmountErr
}

func (l *FS) doUnmount() error {
	// The last close of a file that a killed process held can still be in flight: retry a
	// busy mount for a while rather than detach it lazily.
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for {
		err = l.server.Unmount()
		busy := err != nil && (errors.Is(err, syscall.EBUSY) || strings.Contains(err.Error(), "busy"))
		if !busy || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		// Detach it anyway so that a failed test does not leave a mount behind.
		syscall.Unmount(l.mountpoint, syscall.MNT_DETACH)
		return fmt.Errorf("lossyfs: unmount %s: %w", l.mountpoint, err)
	}
	l.server.Wait()
	return nil
}
