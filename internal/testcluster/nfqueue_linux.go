package testcluster

import (
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// The kernel this suite was written on has no netem (nor any classful qdisc but htb), so
// delay and loss are done the way netem would if it lived in user space: packets of a
// degraded link are queued with iptables' NFQUEUE target in the hub namespace's bridge, and
// this process holds each one for its link's delay before it lets it pass, or drops it. The
// netfilter queue protocol is small enough to speak with package syscall alone.

// Netlink and nfnetlink_queue constants (linux/netlink.h, linux/netfilter/nfnetlink_queue.h).
const (
	nlmsgHdrLen      = 16
	nlmsgError       = 2
	nlmFRequest      = 0x1
	nlmFAck          = 0x4
	solNetlink       = 270
	netlinkNoENOBUFS = 5

	nfnlSubsysQueue = 3
	nfqnlMsgPacket  = 0
	nfqnlMsgVerdict = 1
	nfqnlMsgConfig  = 2

	nfqaPacketHdr  = 1
	nfqaVerdictHdr = 2
	nfqaPayload    = 10

	nfqaCfgCmd       = 1
	nfqaCfgParams    = 2
	nfqaCfgQueueMax  = 3
	nfqaCfgMask      = 4
	nfqaCfgFlags     = 5
	nfqaCfgFFailOpen = 1

	nfqnlCfgCmdBind = 1
	nfqnlCopyPacket = 2

	nfDrop   = 0
	nfAccept = 1
)

// delayer answers one netfilter queue: it reads each queued packet's addresses and issues
// its verdict when its link's delay has passed.
type delayer struct {
	f     *os.File
	queue uint16

	mu      sync.Mutex
	links   map[link]Netem
	last    map[link]time.Time
	rng     *rand.Rand
	pending verdicts
	wake    chan struct{}
	done    chan struct{}
	err     error
}

type verdict struct {
	at      time.Time
	id      uint32
	verdict uint32
}

type verdicts []verdict

func (v verdicts) Len() int           { return len(v) }
func (v verdicts) Less(i, j int) bool { return v[i].at.Before(v[j].at) }
func (v verdicts) Swap(i, j int)      { v[i], v[j] = v[j], v[i] }
func (v *verdicts) Push(x any)        { *v = append(*v, x.(verdict)) }
func (v *verdicts) Pop() any {
	old := *v
	x := old[len(old)-1]
	*v = old[:len(old)-1]
	return x
}

// newDelayer binds queue in the network namespace at nsPath.
func newDelayer(nsPath string, queue uint16, seed uint64) (*delayer, error) {
	fd, err := socketIn(nsPath, syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.NETLINK_NETFILTER)
	if err != nil {
		return nil, err
	}
	_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 8<<20)
	_ = syscall.SetsockoptInt(fd, solNetlink, netlinkNoENOBUFS, 1)
	if err := syscall.Bind(fd, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("bind netlink: %w", err)
	}
	d := &delayer{queue: queue, links: map[link]Netem{}, last: map[link]time.Time{},
		rng: rand.New(rand.NewPCG(seed, 0x6e6574656d)), wake: make(chan struct{}, 1), done: make(chan struct{})}
	// Configure while the socket blocks, so that the acknowledgements can be read in line.
	for _, attrs := range [][]byte{
		nlattr(nfqaCfgCmd, []byte{nfqnlCfgCmdBind, 0, 0, syscall.AF_INET}),
		nlattr(nfqaCfgParams, binary.BigEndian.AppendUint32(nil, 40), nfqnlCopyPacket),
		nlattr(nfqaCfgQueueMax, binary.BigEndian.AppendUint32(nil, 1<<16)),
		append(nlattr(nfqaCfgMask, binary.BigEndian.AppendUint32(nil, nfqaCfgFFailOpen)),
			nlattr(nfqaCfgFlags, binary.BigEndian.AppendUint32(nil, nfqaCfgFFailOpen))...),
	} {
		if err := nlRequest(fd, nfnlSubsysQueue<<8|nfqnlMsgConfig, queue, attrs); err != nil {
			_ = syscall.Close(fd)
			return nil, fmt.Errorf("configure netfilter queue %d: %w", queue, err)
		}
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		_ = syscall.Close(fd)
		return nil, err
	}
	d.f = os.NewFile(uintptr(fd), "nfqueue")
	go d.read()
	go d.release()
	return d, nil
}

// socketIn opens a socket in another network namespace: a socket belongs to the namespace
// its creating thread was in, whichever thread uses it later.
func socketIn(nsPath string, domain, typ, proto int) (int, error) {
	if sysSetns == 0 {
		return -1, errors.New("setns: unknown system call number on " + runtime.GOARCH)
	}
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, err}
			return
		}
		defer self.Close()
		target, err := os.Open(nsPath)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, err}
			return
		}
		defer target.Close()
		if _, _, e := syscall.RawSyscall(sysSetns, target.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("setns %s: %w", nsPath, e)}
			return
		}
		fd, err := syscall.Socket(domain, typ, proto)
		if _, _, e := syscall.RawSyscall(sysSetns, self.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
			// The thread stays in the wrong namespace: leave it locked, so that it ends with
			// this goroutine instead of running others.
			if err == nil {
				_ = syscall.Close(fd)
			}
			ch <- result{-1, fmt.Errorf("setns back: %w", e)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

func nlattr(typ uint16, data ...any) []byte {
	var payload []byte
	for _, d := range data {
		switch d := d.(type) {
		case []byte:
			payload = append(payload, d...)
		case int:
			payload = append(payload, byte(d))
		}
	}
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(payload)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func nlmsg(typ, flags uint16, queue uint16, attrs []byte) []byte {
	b := binary.NativeEndian.AppendUint32(nil, uint32(nlmsgHdrLen+4+len(attrs)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, 0) // seq
	b = binary.NativeEndian.AppendUint32(b, 0) // port id: the kernel fills it in
	b = append(b, syscall.AF_UNSPEC, 0)        // nfgenmsg: family, version
	b = binary.BigEndian.AppendUint16(b, queue)
	return append(b, attrs...)
}

// nlRequest sends a request asking for an acknowledgement and reads it.
func nlRequest(fd int, typ uint16, queue uint16, attrs []byte) error {
	if _, err := syscall.Write(fd, nlmsg(typ, nlmFRequest|nlmFAck, queue, attrs)); err != nil {
		return err
	}
	buf := make([]byte, 8192)
	for {
		n, err := syscall.Read(fd, buf)
		if err != nil {
			return err
		}
		for b := buf[:n]; len(b) >= nlmsgHdrLen; {
			l := int(binary.NativeEndian.Uint32(b))
			if l < nlmsgHdrLen || l > len(b) {
				return errors.New("short netlink message")
			}
			if binary.NativeEndian.Uint16(b[4:]) == nlmsgError && l >= nlmsgHdrLen+4 {
				if e := int32(binary.NativeEndian.Uint32(b[nlmsgHdrLen:])); e != 0 {
					return syscall.Errno(-e)
				}
				return nil
			}
			b = b[(l+3)&^3:]
		}
	}
}

// Set replaces the degraded links. A packet queued for a link no longer degraded passes at
// once.
func (d *delayer) Set(links map[link]Netem) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.links = links
}

func (d *delayer) read() {
	defer close(d.done)
	buf := make([]byte, 1<<16)
	for {
		n, err := d.f.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				d.mu.Lock()
				d.err = err
				d.mu.Unlock()
			}
			return
		}
		for b := buf[:n]; len(b) >= nlmsgHdrLen; {
			l := int(binary.NativeEndian.Uint32(b))
			if l < nlmsgHdrLen || l > len(b) {
				break
			}
			if binary.NativeEndian.Uint16(b[4:]) == nfnlSubsysQueue<<8|nfqnlMsgPacket {
				d.packet(b[nlmsgHdrLen+4 : l])
			}
			b = b[min((l+3)&^3, len(b)):]
		}
	}
}

// packet schedules the verdict of one queued packet from its attributes.
func (d *delayer) packet(attrs []byte) {
	var (
		id      uint32
		haveID  bool
		payload []byte
	)
	for len(attrs) >= 4 {
		l := int(binary.NativeEndian.Uint16(attrs))
		typ := binary.NativeEndian.Uint16(attrs[2:]) & 0x3fff
		if l < 4 || l > len(attrs) {
			break
		}
		switch typ {
		case nfqaPacketHdr:
			if l >= 8 {
				id, haveID = binary.BigEndian.Uint32(attrs[4:]), true
			}
		case nfqaPayload:
			payload = attrs[4:l]
		}
		attrs = attrs[min((l+3)&^3, len(attrs)):]
	}
	if !haveID {
		return
	}
	v := verdict{at: time.Now(), id: id, verdict: nfAccept}
	if len(payload) >= 20 && payload[0]>>4 == 4 {
		k := link{netip.AddrFrom4([4]byte(payload[12:16])), netip.AddrFrom4([4]byte(payload[16:20]))}
		d.mu.Lock()
		if n, ok := d.links[k]; ok {
			if d.rng.Float64() < n.Loss {
				v.verdict = nfDrop
			} else {
				delay := n.Delay
				if n.Jitter > 0 {
					delay += time.Duration(d.rng.Int64N(int64(2*n.Jitter))) - n.Jitter
				}
				v.at = v.at.Add(max(delay, 0))
				if last := d.last[k]; v.at.Before(last) {
					v.at = last
				}
				d.last[k] = v.at
			}
		}
		d.mu.Unlock()
	}
	if v.verdict == nfDrop || !v.at.After(time.Now()) {
		d.send(v)
		return
	}
	d.mu.Lock()
	heap.Push(&d.pending, v)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *delayer) send(v verdict) {
	hdr := binary.BigEndian.AppendUint32(nil, v.verdict)
	hdr = binary.BigEndian.AppendUint32(hdr, v.id)
	_, _ = d.f.Write(nlmsg(nfnlSubsysQueue<<8|nfqnlMsgVerdict, nlmFRequest, d.queue, nlattr(nfqaVerdictHdr, hdr)))
}

// release issues the verdicts that are due, in order.
func (d *delayer) release() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		d.mu.Lock()
		var due []verdict
		now := time.Now()
		for d.pending.Len() > 0 && !d.pending[0].at.After(now) {
			due = append(due, heap.Pop(&d.pending).(verdict))
		}
		next := time.Hour
		if d.pending.Len() > 0 {
			next = d.pending[0].at.Sub(now)
		}
		d.mu.Unlock()
		for _, v := range due {
			d.send(v)
		}
		timer.Reset(next)
		select {
		case <-d.done:
			return
		case <-d.wake:
		case <-timer.C:
		}
	}
}

// Close stops answering the queue; the kernel drops what it still holds for it.
func (d *delayer) Close() error {
	err := d.f.Close()
	<-d.done
	d.mu.Lock()
	defer d.mu.Unlock()
	return errors.Join(err, d.err)
}
