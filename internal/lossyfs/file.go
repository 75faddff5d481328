package lossyfs

import (
	"os"
	"sync"
)

const pageSize = 4096

// fileState is one file's contents as the kernel has handed them to the filesystem: the durable
// image in the backing file, plus the pages and size changes not yet synced. It outlives the
// go-fuse node (the kernel may forget an inode whose data is still pending), so FS keeps it.
type fileState struct {
	mu      sync.Mutex
	backing *os.File // opened read-write once; survives renames and unlinks of the path
	// durable is the backing file's size. size is the size the kernel sees. Backing bytes at or
	// after zeroFrom are logically zero: a truncation below them has not been synced yet.
	durable, size, zeroFrom int64
	dirty                   map[int64][]byte // page number -> whole page, unsynced
}

func newFileState(f *os.File) (*fileState, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	n := fi.Size()
	return &fileState{backing: f, durable: n, size: n, zeroFrom: n, dirty: make(map[int64][]byte)}, nil
}

// page returns page p as it reads now; owned reports whether the slice is the dirty page itself.
// Called with mu held.
func (s *fileState) page(p int64) (buf []byte, owned bool, err error) {
	if d := s.dirty[p]; d != nil {
		return d, true, nil
	}
	buf = make([]byte, pageSize)
	off := p * pageSize
	end := min(off+pageSize, s.durable, s.zeroFrom, s.size)
	if end > off {
		if _, err := s.backing.ReadAt(buf[:end-off], off); err != nil {
			return nil, false, err
		}
	}
	return buf, false, nil
}

func (s *fileState) read(dest []byte, off int64) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if off >= s.size {
		return dest[:0], nil
	}
	n := min(int64(len(dest)), s.size-off)
	dest = dest[:n]
	for done := int64(0); done < n; {
		pos := off + done
		p, in := pos/pageSize, pos%pageSize
		buf, _, err := s.page(p)
		if err != nil {
			return nil, err
		}
		done += int64(copy(dest[done:], buf[in:]))
	}
	return dest, nil
}

func (s *fileState) write(data []byte, off int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for done := 0; done < len(data); {
		pos := off + int64(done)
		p, in := pos/pageSize, pos%pageSize
		buf, owned, err := s.page(p)
		if err != nil {
			return err
		}
		if !owned {
			s.dirty[p] = buf
		}
		done += copy(buf[in:], data[done:])
	}
	s.size = max(s.size, off+int64(len(data)))
	return nil
}

func (s *fileState) truncate(n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n < s.size {
		last := n / pageSize
		if n%pageSize != 0 {
			// The kept part of the last page must be captured before zeroFrom hides it.
			buf, owned, err := s.page(last)
			if err != nil {
				return err
			}
			clear(buf[n%pageSize:])
			if !owned {
				s.dirty[last] = buf
			}
			last++
		}
		for p := range s.dirty {
			if p >= last {
				delete(s.dirty, p)
			}
		}
		s.zeroFrom = min(s.zeroFrom, n)
	}
	s.size = n
	return nil
}

// sync makes the pending state durable: it writes it to the backing file. The backing file is
// not fsynced: it stands for the disk, and the model loses data only at Crash.
func (s *fileState) sync() (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var written int64
	if s.zeroFrom < s.durable {
		if err := s.backing.Truncate(s.zeroFrom); err != nil {
			return 0, err
		}
	}
	if s.size != min(s.durable, s.zeroFrom) {
		if err := s.backing.Truncate(s.size); err != nil {
			return 0, err
		}
	}
	for p, buf := range s.dirty {
		off := p * pageSize
		if off >= s.size {
			continue
		}
		b := buf[:min(pageSize, s.size-off)]
		if _, err := s.backing.WriteAt(b, off); err != nil {
			return 0, err
		}
		written += int64(len(b))
	}
	clear(s.dirty)
	s.durable, s.zeroFrom = s.size, s.size
	return written, nil
}

// drop forgets everything not synced and returns how many bytes of pages that was.
func (s *fileState) drop() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := int64(len(s.dirty)) * pageSize
	clear(s.dirty)
	s.size, s.zeroFrom = s.durable, s.durable
	return n
}

func (s *fileState) pending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.dirty) > 0 || s.size != s.durable || s.zeroFrom != s.durable
}

func (s *fileState) currentSize() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}
