// Package lossyfs is a FUSE filesystem for power-loss tests, in the manner of LazyFS (which
// etcd's robustness tests use): it passes everything through to a backing directory except file
// data, which it keeps in memory until the file is synced. Crash cuts the power: unsynced data
// is discarded, and the backing directory holds exactly what a disk would after a power failure.
// A test runs the code under test in a child process on the mount, kills it, calls Crash, and
// reopens the backing directory directly to check what survived.
//
// The model is the page cache's. A WRITE request from the kernel (from write(2), or from the
// kernel writing back pages dirtied through a shared mapping) only updates the file's pending
// pages and size; so do truncation (by ftruncate, O_TRUNC or truncate(2)) and fallocate. An
// FSYNC request (fsync, fdatasync, or msync with MS_SYNC) writes all of that file's pending
// state to the backing file. Closing a file syncs nothing. Namespace changes (create, mkdir,
// rename, unlink, link) are made in the backing directory at once and are durable without a
// directory fsync, as LazyFS does and as ext4's journal mostly behaves; a test that needs
// unsynced names to vanish needs more than this package.
//
// mmap: the mount does not enable the writeback cache and files are not opened with direct_io,
// so a shared writable mapping works the usual FUSE way. Pages the process dirties stay in the
// kernel's page cache (which this package cannot see and which dies with the mount) until the
// kernel writes them back as WRITE requests: in the background, when the last file descriptor
// is closed, at unmount, or when msync(MS_SYNC)/fsync runs. For msync(MS_SYNC) and fsync the
// kernel (fuse_fsync) writes the dirty pages back and waits for them, then sends FSYNC, so
// exactly those calls make mapped data durable here, as on a disk. msync(MS_ASYNC) does nothing
// since Linux 2.6.19. With direct_io a shared writable mapping is refused (unless the server
// allows it), and with the writeback cache write(2) data too would wait in the kernel until
// writeback; neither is needed. The tests of this package check msync both ways.
//
// FUSE FSYNC carries no range, so a sync covers the whole file even when msync named a part.
// The backing files are not fsynced themselves: they stand for the disk, and the model loses
// data only at Crash, not when the host loses power.
//
// Do not access a mount from the process that serves it through a mapping: a page fault held
// by the kernel while the Go runtime stops the world for garbage collection deadlocks the
// process. Plain system calls are fine.
package lossyfs
