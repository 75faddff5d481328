package multiraft

// GroupStateForTest counts what the host holds per group: loaded groups, leaders it ticks,
// groups marked dirty and proposals waiting. Manual mode only.
func (h *Host) GroupStateForTest() (groups, leaders, dirty, waiters int) {
	for _, s := range h.shards {
		groups += len(s.groups)
		leaders += len(s.leaders)
		dirty += len(s.dirty)
		for _, g := range s.groups {
			waiters += len(g.waiters)
		}
	}
	return groups, leaders, dirty, waiters
}
