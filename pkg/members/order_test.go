package members

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLeaderFirst(t *testing.T) {
	abc := []string{"a", "b", "c"}
	for _, tc := range []struct {
		name    string
		leader  string
		members []string
		first   int
		want    []string
	}{
		{"leader among members", "b", abc, 0, []string{"b", "a", "c"}},
		{"leader first in members", "a", abc, 0, []string{"a", "b", "c"}},
		{"no leader known", "", abc, 0, []string{"a", "b", "c"}},
		{"no leader, rotated", "", abc, 1, []string{"b", "c", "a"}},
		{"leader, rotated past it", "b", abc, 2, []string{"b", "c", "a"}},
		{"rotation wraps", "", abc, 4, []string{"b", "c", "a"}},
		{"negative rotation wraps", "", abc, -1, []string{"c", "a", "b"}},
		{"leader not configured (a hint)", "d", abc, 0, []string{"d", "a", "b", "c"}},
		{"repeated members come once", "a", []string{"a", "b", "a"}, 0, []string{"a", "b"}},
		{"only a leader", "d", nil, 3, []string{"d"}},
		{"nothing", "", nil, 0, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, LeaderFirst(tc.leader, tc.members, tc.first))
		})
	}
}
