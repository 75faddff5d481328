package chanlog

import (
	"crypto/sha256"
	"encoding/binary"
)

// idHash is the first 128 bits of the SHA-256 of a client_msg_id. A cryptographic hash, so
// that no client can pick an id that collides with another's (finding one is a second
// preimage, 2^128 work), and 128 bits, so that chance collisions stay negligible over any
// deployment's lifetime (see the package documentation).
type idHash struct{ hi, lo uint64 }

func hashID(id []byte) idHash {
	sum := sha256.Sum256(id)
	return idHash{binary.BigEndian.Uint64(sum[:8]), binary.BigEndian.Uint64(sum[8:16])}
}

// remembered is one id of the window: 40 bytes.
type remembered struct {
	h   idHash
	seq uint64
	at  int64 // the dedup clock when it was remembered
	// nonce is the nonce of the send whose message took the id (LogBatch.nonces), 0 for none.
	nonce uint64
}

// minRing is the smallest ring a window with ids holds; rings grow by doubling up to MaxIDs.
const minRing = 16

// window is the set of remembered ids: a ring in the order they were remembered (which is also
// the order of their times and seqs, so expiry and eviction only ever take the oldest) and an
// open-addressing table (linear probing) from hash to ring slot for lookups. Nothing here
// depends on map iteration or randomized hashing, so replicas holding the same ids hold them
// identically.
type window struct {
	ring []remembered
	head int // ring slot of the oldest id
	n    int // ids held
	// oldest is the counter of the oldest id: ids are numbered in the order they are
	// remembered, which is what checkpoint records are keyed by.
	oldest uint64
	// table holds ring slot+1 (0 is empty); its length is a power of two at least twice the
	// ring's, so probes stay short.
	table []uint32
}

// next is the counter the next remembered id takes.
func (w *window) next() uint64 { return w.oldest + uint64(w.n) }

func (w *window) at(i int) *remembered { return &w.ring[(w.head+i)%len(w.ring)] }

// lookup returns the remembered id with hash h.
func (w *window) lookup(h idHash) (remembered, bool) {
	if w.n == 0 {
		return remembered{}, false
	}
	mask := uint64(len(w.table) - 1)
	for i := h.lo & mask; ; i = (i + 1) & mask {
		t := w.table[i]
		if t == 0 {
			return remembered{}, false
		}
		if r := &w.ring[t-1]; r.h == h {
			return *r, true
		}
	}
}

// add remembers an id that lookup did not find; the caller has made room (maxIDs).
func (w *window) add(r remembered, maxIDs int) {
	if w.n == len(w.ring) {
		c := max(2*len(w.ring), minRing)
		if maxIDs > 0 {
			c = min(c, maxIDs)
		}
		w.resize(c)
	}
	slot := (w.head + w.n) % len(w.ring)
	w.ring[slot] = r
	w.n++
	w.place(slot)
}

func (w *window) place(slot int) {
	mask := uint64(len(w.table) - 1)
	i := w.ring[slot].h.lo & mask
	for w.table[i] != 0 {
		i = (i + 1) & mask
	}
	w.table[i] = uint32(slot + 1)
}

// dropOldest forgets the oldest id.
func (w *window) dropOldest() {
	slot := w.head
	mask := uint64(len(w.table) - 1)
	i := w.ring[slot].h.lo & mask
	for w.table[i] != uint32(slot+1) {
		i = (i + 1) & mask
	}
	// Backward-shift deletion: pull later entries of the probe run into the hole so lookups
	// never stop early, without tombstones that would pile up in a long-lived table.
	for j := (i + 1) & mask; w.table[j] != 0; j = (j + 1) & mask {
		home := w.ring[w.table[j]-1].h.lo & mask
		// The entry at j may move to i only if its home is not in (i, j], cyclically.
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			w.table[i] = w.table[j]
			i = j
		}
	}
	w.table[i] = 0
	w.ring[slot] = remembered{}
	w.head = (w.head + 1) % len(w.ring)
	w.n--
	w.oldest++
	if w.n == 0 {
		w.head = 0
	}
	// A window emptied by age gives its memory back (an idle channel holds little), with
	// hysteresis so a channel hovering around a size does not resize on every entry.
	if len(w.ring) > minRing && w.n < len(w.ring)/4 {
		w.resize(max(len(w.ring)/2, minRing))
	}
}

// resize moves the ids to a ring of c slots (c >= n) and rebuilds the table.
func (w *window) resize(c int) {
	ring := make([]remembered, c)
	for i := range w.n {
		ring[i] = *w.at(i)
	}
	w.ring, w.head = ring, 0
	t := 1
	for t < 2*c {
		t <<= 1
	}
	w.table = make([]uint32, t)
	for i := range w.n {
		w.place(i)
	}
}
