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

func TestQueue(t *testing.T) {
	drain := func(q *Queue, redirects map[string]string) []string {
		var out []string
		for addr, ok := q.Next(); ok; addr, ok = q.Next() {
			out = append(out, addr)
			q.Redirect(redirects[addr])
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		order     []string
		redirects map[string]string // member -> the member its answer names
		want      []string
	}{
		{"in order", []string{"a", "b", "c"}, nil, []string{"a", "b", "c"}},
		{"each once", []string{"a", "b", "a"}, nil, []string{"a", "b"}},
		{"a hint goes next", []string{"a", "b", "c"}, map[string]string{"a": "c"}, []string{"a", "c", "b"}},
		{"a hint outside the order", []string{"a", "b"}, map[string]string{"a": "d"}, []string{"a", "d", "b"}},
		{"a hint to a member tried is ignored", []string{"a", "b", "c"}, map[string]string{"b": "a"}, []string{"a", "b", "c"}},
		{"members naming each other end", []string{"a", "b"}, map[string]string{"a": "b", "b": "a"}, []string{"a", "b"}},
		{"an empty hint is ignored", []string{"a"}, map[string]string{"a": ""}, []string{"a"}},
		{"nothing", nil, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, drain(NewQueue(tc.order), tc.redirects))
		})
	}
	var zero Queue
	zero.Redirect("a")
	require.Equal(t, []string{"a"}, drain(&zero, nil), "the zero queue takes redirects")
}
