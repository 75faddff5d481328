package auth

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// reloadEvery bounds how often a file is looked at again.
const reloadEvery = time.Second

// watched is a file's parsed contents, read again when its size or modification time changed.
type watched[T any] struct {
	path  string
	parse func([]byte) (T, error)
	now   func() time.Time

	mu      sync.Mutex
	val     T
	loaded  bool
	stamp   string // size and mtime of the version loaded
	checked time.Time
}

func newWatched[T any](path string, parse func([]byte) (T, error), now func() time.Time) *watched[T] {
	return &watched[T]{path: path, parse: parse, now: now}
}

// get returns the contents, reloading first when the last check is older than reloadEvery. A
// file that stopped parsing keeps serving the last good version (reload reports why).
func (w *watched[T]) get() T {
	w.mu.Lock()
	due := w.now().Sub(w.checked) >= reloadEvery
	w.mu.Unlock()
	if due {
		_ = w.reload()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.val
}

func (w *watched[T]) reload() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.checked = w.now()
	fi, err := os.Stat(w.path)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	stamp := fmt.Sprintf("%d/%d", fi.Size(), fi.ModTime().UnixNano())
	if w.loaded && stamp == w.stamp {
		return nil
	}
	data, err := os.ReadFile(w.path)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	v, err := w.parse(data)
	if err != nil {
		return fmt.Errorf("auth: %s: %w", w.path, err)
	}
	w.val, w.loaded, w.stamp = v, true, stamp
	return nil
}
