package lossyfs

import (
	"context"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// node passes namespace operations (lookup, mkdir, rename, unlink, readdir, ...) straight to
// the backing directory, where they are durable at once, and keeps file data in a fileState.
// Data requests are handled here rather than by a file handle, so that every way in (open,
// create, truncate by path) shares one state per file.
type node struct {
	fs.LoopbackNode
	fs *FS

	mu     sync.Mutex
	key    fileKey // the backing file's identity, once known
	hasKey bool
}

// handle is what Open and Create return: the data lives in the node's fileState.
type handle struct{}

var (
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeGetattrer      = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeReader         = (*node)(nil)
	_ fs.NodeWriter         = (*node)(nil)
	_ fs.NodeFsyncer        = (*node)(nil)
	_ fs.NodeFlusher        = (*node)(nil)
	_ fs.NodeReleaser       = (*node)(nil)
	_ fs.NodeAllocater      = (*node)(nil)
	_ fs.NodeStatxer        = (*node)(nil)
	_ fs.NodeCopyFileRanger = (*node)(nil)
	_ fs.NodeTmpfiler       = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeLookuper       = (*node)(nil)
)

func (n *node) backingPath() string {
	return filepath.Join(n.RootData.Path, n.Path(n.Root()))
}

// fileKey returns the backing file's identity, found at path (the node's backing path, which
// the caller passes because a node being created is not in the tree yet).
func (n *node) fileKey(path string) (fileKey, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.hasKey {
		return n.key, nil
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		return fileKey{}, err
	}
	n.key, n.hasKey = keyOf(&st), true
	return n.key, nil
}

// state returns the file's pending state; fresh starts a new one (the file was just created).
func (n *node) state(fresh bool) (*fileState, syscall.Errno) {
	return n.stateAt(n.backingPath(), fresh)
}

func (n *node) stateAt(path string, fresh bool) (*fileState, syscall.Errno) {
	k, err := n.fileKey(path)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	s, err := n.fs.state(k, path, fresh)
	return s, fs.ToErrno(err)
}

// Open never passes O_TRUNC to the backing file: truncation is a data change and goes to the
// state.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if !n.fs.alive() {
		return nil, 0, syscall.EIO
	}
	s, errno := n.state(false)
	if errno != 0 {
		return nil, 0, errno
	}
	if flags&syscall.O_TRUNC != 0 {
		if err := s.truncate(0); err != nil {
			return nil, 0, fs.ToErrno(err)
		}
	}
	return handle{}, 0, 0
}

// Create makes the name at once (a namespace change) through the loopback, which gives the
// inode the identity a later lookup will find.
func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if !n.fs.alive() {
		return nil, nil, 0, syscall.EIO
	}
	bflags := (flags | syscall.O_EXCL) &^ (syscall.O_TRUNC | syscall.O_APPEND)
	ch, lf, _, errno := n.LoopbackNode.Create(ctx, name, bflags, mode, out)
	created := errno == 0
	if created {
		if r, ok := lf.(fs.FileReleaser); ok {
			r.Release(ctx)
		}
	} else if errno == syscall.EEXIST && flags&syscall.O_EXCL == 0 {
		if ch, errno = n.LoopbackNode.Lookup(ctx, name, out); errno != 0 {
			return nil, nil, 0, errno
		}
	} else {
		return nil, nil, 0, errno
	}
	child, ok := ch.Operations().(*node)
	if !ok {
		return nil, nil, 0, syscall.EIO
	}
	s, errno := child.stateAt(filepath.Join(n.backingPath(), name), created)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	if flags&syscall.O_TRUNC != 0 {
		if err := s.truncate(0); err != nil {
			return nil, nil, 0, fs.ToErrno(err)
		}
	}
	out.Size = uint64(s.currentSize())
	return ch, handle{}, 0, 0
}

// Unlink drops the state of a file whose last name goes: a new file may reuse its inode number.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if !n.fs.alive() {
		return syscall.EIO
	}
	p := filepath.Join(n.backingPath(), name)
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return fs.ToErrno(err)
	}
	if err := syscall.Unlink(p); err != nil {
		return fs.ToErrno(err)
	}
	if st.Nlink <= 1 {
		n.fs.forget(keyOf(&st))
	}
	return 0
}

// Lookup serves LOOKUP and each entry of READDIRPLUS: the kernel takes the size in the reply
// as the file's, so it must be the pending one (a mapping past a stale size faults SIGBUS).
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ch, errno := n.LoopbackNode.Lookup(ctx, name, out)
	if errno != 0 {
		return nil, errno
	}
	if child, ok := ch.Operations().(*node); ok && out.Attr.Mode&syscall.S_IFMT == syscall.S_IFREG {
		child.patchSize(filepath.Join(n.backingPath(), name), &out.Attr)
	}
	return ch, 0
}

// patchSize replaces the backing file's size in a by the size the kernel must see.
func (n *node) patchSize(path string, a *fuse.Attr) {
	if k, err := n.fileKey(path); err == nil {
		if s := n.fs.existing(k); s != nil {
			a.Size = uint64(s.currentSize())
			a.Blocks = (a.Size + 511) / 512
		}
	}
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if errno := n.LoopbackNode.Getattr(ctx, nil, out); errno != 0 {
		return errno
	}
	if out.Mode&syscall.S_IFMT == syscall.S_IFREG {
		n.patchSize(n.backingPath(), &out.Attr)
	}
	return 0
}
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if !n.fs.alive() {
		return syscall.EIO
	}
	if size, ok := in.GetSize(); ok {
		s, errno := n.state(false)
		if errno != 0 {
			return errno
		}
		if err := s.truncate(int64(size)); err != nil {
			return fs.ToErrno(err)
		}
		in.Valid &^= fuse.FATTR_SIZE
	}
	if in.Valid&^(fuse.FATTR_FH|fuse.FATTR_LOCKOWNER) != 0 {
		if errno := n.LoopbackNode.Setattr(ctx, nil, in, out); errno != 0 {
			return errno
		}
	}
	return n.Getattr(ctx, f, out)
}

func (n *node) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	s, errno := n.state(false)
	if errno != 0 {
		return nil, errno
	}
	b, err := s.read(dest, off)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	return fuse.ReadResultData(b), 0
}

func (n *node) Write(ctx context.Context, f fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	s, errno := n.state(false)
	if errno != 0 {
		return 0, errno
	}
	if err := s.write(data, off); err != nil {
		return 0, fs.ToErrno(err)
	}
	return uint32(len(data)), 0
}

// Fsync serves fsync and fdatasync of files, and msync(MS_SYNC) of their mappings (the kernel
// writes the mapping's dirty pages back with WRITE requests first). Directories have nothing
// pending: their changes were made durable as they happened.
func (n *node) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	if !n.fs.alive() {
		return syscall.EIO
	}
	if n.IsDir() {
		return 0
	}
	path := n.backingPath()
	if !n.fs.waitHeld(ctx, filepath.Base(path)) {
		return syscall.EIO
	}
	s, errno := n.stateAt(path, false)
	if errno != 0 {
		return errno
	}
	written, err := s.sync()
	if err != nil {
		return fs.ToErrno(err)
	}
	n.fs.synced(written)
	return 0
}

// Flush (close) makes nothing durable: closing a file does not sync it.
func (n *node) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno { return 0 }

func (n *node) Release(ctx context.Context, f fs.FileHandle) syscall.Errno { return 0 }

// Allocate supports plain fallocate, which only grows the file.
func (n *node) Allocate(ctx context.Context, f fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	if mode != 0 {
		return syscall.EOPNOTSUPP
	}
	s, errno := n.state(false)
	if errno != 0 {
		return errno
	}
	if end := int64(off + size); end > s.currentSize() {
		return fs.ToErrno(s.truncate(end))
	}
	return 0
}

// Statx is refused so the kernel falls back to Getattr, which reports the pending size.
func (n *node) Statx(ctx context.Context, f fs.FileHandle, flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return syscall.ENOSYS
}

// CopyFileRange is refused so the kernel copies with reads and writes, which the state sees.
func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut, length, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}

func (n *node) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EOPNOTSUPP
}
