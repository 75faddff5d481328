//go:build !linux

package testcluster

import (
	"errors"
	"net/netip"
	"os/exec"
	"testing"
)

// netns is Linux only.
type netns struct{}

func newNetns(t testing.TB) *netns {
	t.Skip("testcluster: Netns() needs Linux network namespaces")
	return nil
}

func (*netns) attach(key) netip.Addr                    { return netip.Addr{} }
func (*netns) command(key, string, ...string) *exec.Cmd { return nil }
func (*netns) ip(key) (netip.Addr, bool)                { return netip.Addr{}, false }
func (*netns) add(*netFault) (int, error)               { return 0, errors.ErrUnsupported }
func (*netns) heal(...int) error                        { return errors.ErrUnsupported }
