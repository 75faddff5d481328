package raftstore

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/triarch-io/triarch/internal/lossyfs"
)

var powerLossLegacy = flag.Bool("raftstore.powerloss-legacy-sync", false,
	"run TestPowerLoss with the store's old sync (SyncWrites off, one db.Sync() per Save), which it must catch losing acknowledged writes")

// withLegacySync is the store's durability before SyncWrites: see badgerConfig.legacySync.
func withLegacySync() BadgerOption { return func(c *badgerConfig) { c.legacySync = true } }

const (
	powerLossGroups = 8
	powerLossCycles = 6
	// The child's environment: its data directory (on the lossy mount) and its cycle.
	powerLossDirEnv   = "RAFTSTORE_POWERLOSS_DIR"
	powerLossCycleEnv = "RAFTSTORE_POWERLOSS_CYCLE"
	powerLossLegacyEv = "RAFTSTORE_POWERLOSS_LEGACY"
	powerLossHeldEnv  = "RAFTSTORE_POWERLOSS_HELD"
)

// powerLossOptions make Badger switch memtables (and value log files) every few hundred
// kilobytes, so that a crash soon after a switch is cheap to reach; transactions of at most 8
// operations make most Saves span several commits.
func powerLossOptions(legacy bool) []BadgerOption {
	opts := []BadgerOption{
		WithValueLogGC(0),
		WithBadgerTuning(func(o *badger.Options) {
			o.MemTableSize = 256 << 10
			o.ValueLogFileSize = 1 << 20
			o.NumMemtables = 6
		}),
		func(c *badgerConfig) { c.maxTxnOps = 8 },
	}
	if legacy {
		opts = append(opts, withLegacySync())
	}
	return opts
}

// TestPowerLoss cuts the power under a store that is saving raft logs (and, concurrently, state
// records as the apply stage does) and checks that everything a returned Save wrote survives.
//
// The store runs in a child process on a lossyfs mount, which keeps every write in memory until
// it is synced (fsync, fdatasync, msync). The child acknowledges each returned Save on stdout
// and kills itself (SIGKILL) right after Badger switched to a new memtable: the moment the old
// sync lost data, because db.Sync() synced only the new memtable's WAL and the old one stayed
// unsynced until Badger flushed it to a table. In every other cycle lossyfs holds the syncs of
// those tables (HoldSyncs) so that the flush is still pending at the cut, as on a slow disk;
// in the others the flush races the cut. The parent then cuts the power (lossyfs.Crash drops
// what was not synced, including what the kernel writes back for the dead process), opens the
// backing directory directly, and checks that every acknowledged entry is there with its term,
// that the hard state is at least the acknowledged one, and that no checkpoint names an index
// past the log's end (a checkpoint outliving its entries). The next cycle continues on the same
// data.
//
// With -raftstore.powerloss-legacy-sync the store runs with the old sync, and this test fails.
func TestPowerLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("power-loss test: mounts a FUSE filesystem and runs child processes")
	}
	backing := t.TempDir()
	acked := make(map[uint64]map[uint64]uint64) // group -> index -> term
	var lastTerm uint64
	for cycle := 1; cycle <= powerLossCycles; cycle++ {
		mnt := t.TempDir()
		held := cycle%2 == 1
		var opts []lossyfs.Option
		if held {
			opts = append(opts, lossyfs.HoldSyncs(func(name string) bool { return strings.HasSuffix(name, ".sst") }))
		}
		fsys, err := lossyfs.Mount(backing, mnt, opts...)
		if errors.Is(err, lossyfs.ErrUnavailable) {
			t.Skipf("power-loss test needs FUSE: %v", err)
		}
		require.NoError(t, err)
		t.Cleanup(func() { fsys.Crash() }) // unmounts if the cycle fails half-way
		acks, out := runPowerLossChild(t, mnt, cycle, held)
		st, err := fsys.Crash()
		require.NoError(t, err)
		for _, a := range acks {
			if acked[a.group] == nil {
				acked[a.group] = make(map[uint64]uint64)
			}
			for i := a.from; i <= a.last; i++ {
				acked[a.group][i] = a.term
			}
			lastTerm = max(lastTerm, a.term)
		}
		t.Logf("cycle %d (table syncs held: %v): %d acknowledged group updates; %s; lossyfs %+v", cycle, held, len(acks), out, st)
		if !verifyPowerLoss(t, backing, acked, lastTerm) {
			t.Fatalf("cycle %d: acknowledged writes lost in a power failure", cycle)
		}
	}
}

type powerLossAck struct {
	group, from, last, term uint64
}

// runPowerLossChild runs one power cycle and returns what the child acknowledged, and its
// last words.
func runPowerLossChild(t *testing.T, dir string, cycle int, held bool) ([]powerLossAck, string) {
	t.Helper()
	// A child stuck in a Save (it should not be) is killed, and the test fails below.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestPowerLossChild$", "-test.v")
	cmd.Env = append(os.Environ(),
		powerLossDirEnv+"="+dir,
		powerLossCycleEnv+"="+strconv.Itoa(cycle),
		powerLossLegacyEv+"="+strconv.FormatBool(*powerLossLegacy),
		powerLossHeldEnv+"="+strconv.FormatBool(held))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !errors.As(err, &ee) || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die by SIGKILL: %v\nstdout:\n%s\nstderr:\n%s", err, tail(stdout.String()), stderr.String())
	}
	var acks []powerLossAck
	var last string
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) == 5 && f[0] == "ack" {
			var a powerLossAck
			for i, p := range []*uint64{&a.group, &a.from, &a.last, &a.term} {
				v, err := strconv.ParseUint(f[i+1], 10, 64)
				require.NoError(t, err, line)
				*p = v
			}
			acks = append(acks, a)
		} else if strings.HasPrefix(line, "crash:") {
			last = line
		}
	}
	require.NotEmpty(t, last, "child did not say why it crashed:\n%s\n%s", tail(stdout.String()), stderr.String())
	return acks, last
}

func tail(s string) string {
	if len(s) > 2000 {
		return "..." + s[len(s)-2000:]
	}
	return s
}

// verifyPowerLoss opens what survived and reports (as test errors) every loss.
func verifyPowerLoss(t *testing.T, dir string, acked map[uint64]map[uint64]uint64, term uint64) bool {
	t.Helper()
	s, err := OpenBadger(dir, powerLossOptions(false)...)
	if !assert(t, err == nil, "reopen after power loss: %v", err) {
		return false
	}
	defer s.Close()
	ok := true
	for g := uint64(1); g <= powerLossGroups; g++ {
		l, err := s.Open(g)
		require.NoError(t, err)
		last, err := l.LastIndex()
		require.NoError(t, err)
		want := acked[g]
		idx := slices.Sorted(func(yield func(uint64) bool) {
			for i := range want {
				if !yield(i) {
					return
				}
			}
		})
		if len(idx) == 0 {
			continue
		}
		top := idx[len(idx)-1]
		if !assert(t, last >= top, "group %d: log ends at %d, acknowledged up to %d", g, last, top) {
			ok = false
		}
		got, err := l.Entries(1, min(last, top)+1, noLimit)
		if !assert(t, err == nil, "group %d: what survived is not a log (a later write outlived an earlier one): %v", g, err) {
			ok = false
			continue
		}
		missing := 0
		for _, e := range got {
			wt, w := want[e.GetIndex()]
			if w && (e.GetTerm() != wt || !bytes.Equal(e.GetData(), powerLossData(g, e.GetIndex(), wt))) {
				missing++
			}
		}
		if !assert(t, missing == 0, "group %d: %d acknowledged entries replaced by others", g, missing) {
			ok = false
		}
		hs, _, err := l.InitialState()
		require.NoError(t, err)
		if !assert(t, hs.GetTerm() >= want[top] && hs.GetVote() == 1,
			"group %d: hard state term %d vote %d, acknowledged term %d vote 1", g, hs.GetTerm(), hs.GetVote(), want[top]) {
			ok = false
		}
		v, err := s.GetState(g, []byte("c"))
		require.NoError(t, err)
		if v != nil {
			applied := binary.BigEndian.Uint64(v)
			if !assert(t, applied <= last, "group %d: checkpoint at %d outlives the log, which ends at %d", g, applied, last) {
				ok = false
			}
		}
	}
	_ = term
	return ok
}

func assert(t *testing.T, cond bool, format string, args ...any) bool {
	t.Helper()
	if !cond {
		t.Errorf(format, args...)
	}
	return cond
}

// powerLossData is an entry's payload: it names the entry, and some entries are big enough for
// Badger's value log.
func powerLossData(group, index, term uint64) []byte {
	n := 100
	if index%7 == 0 {
		n = 5000
	}
	b := fmt.Appendf(nil, "g%d/i%d/t%d/", group, index, term)
	for len(b) < n {
		b = append(b, byte('a'+(index+uint64(len(b)))%26))
	}
	return b
}

// TestPowerLossChild is the store process of TestPowerLoss; it does nothing when run alone.
func TestPowerLossChild(t *testing.T) {
	dir := os.Getenv(powerLossDirEnv)
	if dir == "" {
		t.Skip("run by TestPowerLoss")
	}
	cycle, err := strconv.ParseUint(os.Getenv(powerLossCycleEnv), 10, 64)
	require.NoError(t, err)
	legacy := os.Getenv(powerLossLegacyEv) == "true"
	held := os.Getenv(powerLossHeldEnv) == "true"
	s, err := OpenBadger(dir, powerLossOptions(legacy)...)
	require.NoError(t, err)
	term := cycle

	// applied[g] is the last index of g a Save has returned: the apply stage may checkpoint it.
	var applied [powerLossGroups + 1]atomic.Uint64
	next := make([]uint64, powerLossGroups+1)
	for g := uint64(1); g <= powerLossGroups; g++ {
		l, err := s.Open(g)
		require.NoError(t, err)
		last, err := l.LastIndex()
		require.NoError(t, err)
		next[g] = last + 1
		applied[g].Store(last)
	}

	// The apply stage: after each Save it checkpoints what was saved (with some padding),
	// concurrently with the next Save, so its writes can make Badger switch memtables between
	// a Save's commit and its sync.
	saved := make(chan struct{}, 1)
	go func() {
		pad := bytes.Repeat([]byte{'p'}, 200)
		for range saved {
			var ws []StateWrite
			for g := uint64(1); g <= powerLossGroups; g++ {
				ws = append(ws,
					StateWrite{GroupID: g, Key: []byte("r"), Value: pad},
					StateWrite{GroupID: g, Key: []byte("c"), Value: binary.BigEndian.AppendUint64(nil, applied[g].Load())})
			}
			if err := s.SaveState(ws); err != nil {
				fmt.Fprintln(os.Stderr, "save state:", err)
				os.Exit(2)
			}
		}
	}()

	rng := rand.New(rand.NewPCG(cycle, 42))
	out := bufio.NewWriter(os.Stdout)
	memFiles := func() int {
		ms, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
		n := 0
		for _, m := range ms {
			v, _ := strconv.Atoi(strings.TrimSuffix(filepath.Base(m), ".mem"))
			n = max(n, v)
		}
		return n
	}
	deadline := time.Now().Add(15 * time.Second)
	rotations, start := 0, memFiles()
	for saves := 1; ; saves++ {
		var us []Update
		for g := uint64(1); g <= powerLossGroups; g++ {
			if rng.IntN(4) == 0 {
				continue
			}
			n := 1 + rng.IntN(24)
			var es []*raftpb.Entry
			for k := range n {
				i := next[g] + uint64(k)
				es = append(es, &raftpb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(term),
					Type: raftpb.EntryType_EntryNormal.Enum(), Data: powerLossData(g, i, term)})
			}
			us = append(us, Update{GroupID: g, Entries: es, HardState: hs(term, 1, next[g]-1)})
		}
		before := memFiles()
		if err := s.Save(us); err != nil {
			fmt.Fprintln(os.Stderr, "save:", err)
			os.Exit(2)
		}
		for _, u := range us {
			first, last := u.Entries[0].GetIndex(), u.Entries[len(u.Entries)-1].GetIndex()
			fmt.Fprintf(out, "ack %d %d %d %d\n", u.GroupID, first, last, term)
			next[u.GroupID] = last + 1
			applied[u.GroupID].Store(last)
		}
		select {
		case saved <- struct{}{}:
		default:
		}
		after := memFiles()
		rotations = after - start
		why := ""
		switch {
		case held && rotations >= 4:
			// Every switch was a chance to leave a Save's commits in an unsynced WAL, which
			// stays unflushed; stop before Badger runs out of memtables.
			why = "4 memtables switched, their table flushes held"
		case !held && after > before && saves >= 50:
			why = "memtable switched during a Save"
		case time.Now().After(deadline):
			why = "time is up"
		}
		if why != "" {
			fmt.Fprintf(out, "crash: %s after %d Saves\n", why, saves)
		}
		// One write per Save: what the parent reads is exactly what was acknowledged.
		if err := out.Flush(); err != nil {
			os.Exit(2)
		}
		if why != "" {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
}
