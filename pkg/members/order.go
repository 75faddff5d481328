package members

// LeaderFirst is the order to try members in: leader first when known ("" when not; it need
// not be one of members, since a hint may name a member the caller was not configured with),
// then members from index first on, wrapping around (callers rotate to the member that
// answered last). Each address comes once: a caller that tries them in turn loses nothing by
// not asking the leader twice.
func LeaderFirst(leader string, members []string, first int) []string {
	out := make([]string, 0, len(members)+1)
	seen := make(map[string]bool, len(members)+1)
	add := func(addr string) {
		if !seen[addr] {
			seen[addr] = true
			out = append(out, addr)
		}
	}
	if leader != "" {
		add(leader)
	}
	if n := len(members); n > 0 {
		first %= n
		if first < 0 {
			first += n
		}
		for i := range n {
			add(members[(first+i)%n])
		}
	}
	return out
}
