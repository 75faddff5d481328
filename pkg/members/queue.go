package members

// Queue hands out the members to try, in order and each at most once, and lets an answer
// that names another member (a NotLeader or NotOwner hint) put that member next. The zero
// value is an empty queue.
type Queue struct {
	next  []string
	tried map[string]bool
}

// NewQueue returns a queue of order (LeaderFirst's, say).
func NewQueue(order []string) *Queue {
	return &Queue{next: order, tried: make(map[string]bool, len(order))}
}

// Next returns the next member not tried yet and marks it tried; false when none is left.
func (q *Queue) Next() (string, bool) {
	for len(q.next) > 0 {
		addr := q.next[0]
		q.next = q.next[1:]
		if !q.tried[addr] {
			if q.tried == nil {
				q.tried = map[string]bool{}
			}
			q.tried[addr] = true
			return addr, true
		}
	}
	return "", false
}

// Redirect puts addr next, unless it is empty or was tried already.
func (q *Queue) Redirect(addr string) {
	if addr != "" && !q.tried[addr] {
		q.next = append([]string{addr}, q.next...)
	}
}
