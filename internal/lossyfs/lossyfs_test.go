package lossyfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// mount serves a fresh backing directory, skipping the test where FUSE is unavailable.
func mount(t *testing.T) (l *FS, backing, mnt string) {
	t.Helper()
	backing, mnt = t.TempDir(), t.TempDir()
	l, err := Mount(backing, mnt)
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("lossyfs needs FUSE: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, backing, mnt
}

func writeFile(t *testing.T, path string, data []byte, sync bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
}

func wantFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes %.40q..., want %d bytes %.40q...", path, len(got), got, len(want), want)
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i%251)
	}
	return b
}

func crash(t *testing.T, l *FS) Stats {
	t.Helper()
	st, err := l.Crash()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestSyncedDataSurvivesUnsyncedDoesNot(t *testing.T) {
	l, backing, mnt := mount(t)
	a, b := pattern(10000, 'a'), pattern(5000, 'b')
	writeFile(t, filepath.Join(mnt, "a"), a, true)
	writeFile(t, filepath.Join(mnt, "b"), b, false)
	// Unsynced changes to a synced file: an overwrite inside it and an append.
	f, err := os.OpenFile(filepath.Join(mnt, "a"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("XXXX"), 4095); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("tail"), 10000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// The mount shows the writes...
	want := append(append([]byte{}, a...), "tail"...)
	copy(want[4095:], "XXXX")
	wantFile(t, filepath.Join(mnt, "a"), want)
	wantFile(t, filepath.Join(mnt, "b"), b)
	// ...the disk only what was synced.
	st := crash(t, l)
	wantFile(t, filepath.Join(backing, "a"), a)
	wantFile(t, filepath.Join(backing, "b"), nil) // the name is durable, the data is not
	if st.DroppedBytes == 0 || st.Fsyncs != 1 {
		t.Fatalf("stats %+v: want one fsync and dropped bytes", st)
	}
}

func TestFdatasyncMakesDataDurable(t *testing.T) {
	l, backing, mnt := mount(t)
	f, err := os.Create(filepath.Join(mnt, "f"))
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(3*pageSize+7, 'x')
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Fdatasync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("lost")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	crash(t, l)
	wantFile(t, filepath.Join(backing, "f"), data)
}

func TestTruncate(t *testing.T) {
	l, backing, mnt := mount(t)
	data := pattern(10000, 'a')
	writeFile(t, filepath.Join(mnt, "shrunk"), data, true)
	writeFile(t, filepath.Join(mnt, "regrown"), data, true)
	writeFile(t, filepath.Join(mnt, "synced"), data, true)

	// An unsynced truncation is lost.
	if err := os.Truncate(filepath.Join(mnt, "shrunk"), 100); err != nil {
		t.Fatal(err)
	}
	wantFile(t, filepath.Join(mnt, "shrunk"), data[:100])

	// Shrinking then growing must not bring the old bytes back, before or after the sync.
	f, err := os.OpenFile(filepath.Join(mnt, "regrown"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(5000); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(9000); err != nil {
		t.Fatal(err)
	}
	regrown := append(append([]byte{}, data[:5000]...), make([]byte, 4000)...)
	wantFile(t, filepath.Join(mnt, "regrown"), regrown)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// O_TRUNC is a data change too: synced here.
	g, err := os.OpenFile(filepath.Join(mnt, "synced"), os.O_RDWR|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Write([]byte("short")); err != nil {
		t.Fatal(err)
	}
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
	g.Close()

	crash(t, l)
	wantFile(t, filepath.Join(backing, "shrunk"), data)
	wantFile(t, filepath.Join(backing, "regrown"), regrown)
	wantFile(t, filepath.Join(backing, "synced"), []byte("short"))
}

func TestRenameAndUnlink(t *testing.T) {
	l, backing, mnt := mount(t)
	a := pattern(6000, 'a')
	writeFile(t, filepath.Join(mnt, "a.tmp"), a, true)
	if err := os.Rename(filepath.Join(mnt, "a.tmp"), filepath.Join(mnt, "a")); err != nil {
		t.Fatal(err)
	}
	// Data written under the new name, unsynced, follows the file and is lost.
	writeFile(t, filepath.Join(mnt, "a"), []byte("unsynced"), false)
	writeFile(t, filepath.Join(mnt, "gone"), a, true)
	if err := os.Remove(filepath.Join(mnt, "gone")); err != nil {
		t.Fatal(err)
	}
	// A new file may get the unlinked one's inode number: it starts empty, not with the old
	// file's pending state.
	writeFile(t, filepath.Join(mnt, "new"), nil, false)
	wantFile(t, filepath.Join(mnt, "new"), nil)
	if err := os.Mkdir(filepath.Join(mnt, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(mnt, "dir", "c"), []byte("in a directory"), true)

	crash(t, l)
	wantFile(t, filepath.Join(backing, "a"), a)
	if _, err := os.Stat(filepath.Join(backing, "a.tmp")); !os.IsNotExist(err) {
		t.Fatalf("a.tmp after rename: %v", err)
	}
	if _, err := os.Stat(filepath.Join(backing, "gone")); !os.IsNotExist(err) {
		t.Fatalf("gone after unlink: %v", err)
	}
	wantFile(t, filepath.Join(backing, "dir", "c"), []byte("in a directory"))
}

func TestHeldSyncsAreLostInACrash(t *testing.T) {
	backing, mnt := t.TempDir(), t.TempDir()
	l, err := Mount(backing, mnt, HoldSyncs(func(name string) bool { return name == "held" }))
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("lossyfs needs FUSE: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	writeFile(t, filepath.Join(mnt, "free"), []byte("free"), true)
	f, err := os.Create(filepath.Join(mnt, "held"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Sync() }()
	// The sync cannot finish before the crash; the crash makes it fail, and its unmount waits
	// for the file to be closed.
	crashed := make(chan error, 1)
	go func() {
		_, err := l.Crash()
		crashed <- err
	}()
	if err := <-done; err == nil {
		t.Fatal("held sync succeeded after the crash")
	}
	f.Close()
	if err := <-crashed; err != nil {
		t.Fatal(err)
	}
	wantFile(t, filepath.Join(backing, "free"), []byte("free"))
	wantFile(t, filepath.Join(backing, "held"), nil)
}

func TestCloseSyncsEverything(t *testing.T) {
	l, backing, mnt := mount(t)
	writeFile(t, filepath.Join(mnt, "f"), []byte("kept"), false)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	wantFile(t, filepath.Join(backing, "f"), []byte("kept"))
}

// TestMmap checks what makes data written through a shared mapping durable: msync(MS_SYNC)
// does; munmap and close do not. The mapping is used by a child process (see doc.go).
func TestMmap(t *testing.T) {
	l, backing, mnt := mount(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestMmapHelper$")
	cmd.Env = append(os.Environ(), "LOSSYFS_MMAP_DIR="+mnt)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	st := crash(t, l)
	synced, unsynced := mmapData('s'), mmapData('u')
	wantFile(t, filepath.Join(backing, "synced"), append(synced[:pageSize:pageSize], make([]byte, 3*pageSize)...))
	// Created and sized (by a synced ftruncate), never synced after the mapped writes.
	wantFile(t, filepath.Join(backing, "unsynced"), make([]byte, 4*pageSize))
	_ = unsynced
	if st.Fsyncs < 2 || st.DroppedBytes == 0 {
		t.Fatalf("stats %+v: want the msync and the ftruncate's fsyncs, and dropped pages", st)
	}
}

func mmapData(seed byte) []byte { return pattern(pageSize, seed) }

// TestMmapHelper runs in the child of TestMmap.
func TestMmapHelper(t *testing.T) {
	dir := os.Getenv("LOSSYFS_MMAP_DIR")
	if dir == "" {
		t.Skip("helper of TestMmap")
	}
	for _, c := range []struct {
		name string
		sync bool
	}{{"synced", true}, {"unsynced", false}} {
		f, err := os.OpenFile(filepath.Join(dir, c.name), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(4 * pageSize); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		m, err := syscall.Mmap(int(f.Fd()), 0, 4*pageSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		seed := byte('u')
		if c.sync {
			seed = 's'
		}
		copy(m, mmapData(seed))
		if c.sync {
			if err := msync(m); err != nil {
				t.Fatal(fmt.Errorf("msync: %w", err))
			}
		}
		if err := syscall.Munmap(m); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}
