package gateway

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// One connection per address, shared by every call to it.

// connPool keeps one connection per address.
type connPool struct {
	dial   Dialer
	mu     sync.RWMutex
	conns  map[string]grpc.ClientConnInterface
	closed bool
}

func (p *connPool) get(addr string) (grpc.ClientConnInterface, error) {
	p.mu.RLock()
	cc, closed := p.conns[addr], p.closed
	p.mu.RUnlock()
	if cc != nil {
		return cc, nil
	}
	if closed {
		return nil, status.Error(codes.Unavailable, "gateway is shutting down")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cc := p.conns[addr]; cc != nil {
		return cc, nil
	}
	if p.closed {
		return nil, status.Error(codes.Unavailable, "gateway is shutting down")
	}
	cc, err := p.dial(addr)
	if err != nil {
		return nil, err
	}
	p.conns[addr] = cc
	return cc, nil
}

func (p *connPool) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	var errs []error
	for addr, cc := range p.conns {
		if c, ok := cc.(io.Closer); ok {
			if err := c.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", addr, err))
			}
		}
		delete(p.conns, addr)
	}
	return errors.Join(errs...)
}
