//go:build linux

package replica

import (
	"fmt"
	"syscall"
)

// statfsFree returns the bytes available to unprivileged users on dir's file system.
func statfsFree(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}
