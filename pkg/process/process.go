package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/triarch-io/triarch/pkg/admin"
	"github.com/triarch-io/triarch/pkg/grpcx"
	"github.com/triarch-io/triarch/pkg/telemetry"
)

// Process is one running service: its gRPC server, health service and admin server.
type Process struct {
	cfg    Common
	tel    *telemetry.Telemetry
	log    *slog.Logger
	grpc   *grpc.Server
	health *health.Server
	lis    net.Listener
	admin  *admin.Server

	wg      sync.WaitGroup
	errc    chan error
	stopped sync.Once
}

// Options say what a service adds to the common process.
type Options struct {
	// Services are the gRPC service names health reports on, besides the process ("").
	Services []string
	// Register adds the service's gRPC handlers.
	Register func(*grpc.Server)
	// Ready reports readiness for /readyz; nil means always ready.
	Ready admin.ReadyFunc
	// ServerOptions are added to the gRPC server's (transport security and its
	// interceptors: grpcx.Security.ServerOptions).
	ServerOptions []grpc.ServerOption
}

// Start binds the gRPC and admin listeners and starts serving. Health reports SERVING for the
// process ("") and each of opts.Services until Stop.
func Start(cfg Common, tel *telemetry.Telemetry, opts Options) (*Process, error) {
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %q: %w", cfg.Listen, err)
	}
	adm, err := admin.Listen(cfg.AdminAddr, adminHandler(cfg, tel.MetricsHandler(), opts.Ready), tel.Logger)
	if err != nil {
		_ = lis.Close()
		return nil, err
	}
	p := &Process{
		cfg:    cfg,
		tel:    tel,
		log:    tel.Logger,
		grpc:   grpcx.NewServer(tel, grpcx.ServerOptions{Logger: tel.Logger}, opts.ServerOptions...),
		health: health.NewServer(),
		lis:    lis,
		admin:  adm,
		errc:   make(chan error, 1),
	}
	healthpb.RegisterHealthServer(p.grpc, p.health)
	if opts.Register != nil {
		opts.Register(p.grpc)
	}
	p.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	for _, s := range opts.Services {
		p.health.SetServingStatus(s, healthpb.HealthCheckResponse_SERVING)
	}
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		if err := p.grpc.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			p.Fail(fmt.Errorf("grpc serve: %w", err))
		}
	}()
	go func() {
		defer p.wg.Done()
		if err := adm.Serve(); err != nil {
			p.Fail(err)
		}
	}()
	p.log.Info("serving", "grpc", p.Addr(), "advertise", p.Advertise(), "admin", p.AdminAddr().String())
	return p, nil
}

// adminHandler is the admin endpoints, with /debug/pprof/ only when cfg.Pprof is set: profiles
// and the command line are no business of whoever can reach the admin port. Without it an outer
// mux answers every path the admin mux would route to pprof with 404 (the same patterns, so
// the same paths).
func adminHandler(cfg Common, metrics http.Handler, ready admin.ReadyFunc) http.Handler {
	h := admin.Handler(metrics, ready)
	if cfg.Pprof {
		return h
	}
	mux := http.NewServeMux()
	mux.Handle("/debug/pprof/", http.NotFoundHandler())
	mux.Handle("/", h)
	return mux
}

// Addr is the bound gRPC address.
func (p *Process) Addr() string { return p.lis.Addr().String() }

// Advertise is the address peers should dial: --advertise, or the bound address.
func (p *Process) Advertise() string {
	if p.cfg.Advertise != "" {
		return p.cfg.Advertise
	}
	return p.Addr()
}

// AdminAddr is the bound admin address.
func (p *Process) AdminAddr() net.Addr { return p.admin.Addr() }

// Server is the gRPC server, for services that register handlers after Start.
func (p *Process) Server() *grpc.Server { return p.grpc }

// Err delivers the first serving error (a listener failing under the process).
func (p *Process) Err() <-chan error { return p.errc }

// Stop reports NOT_SERVING, drains gRPC calls until ctx ends (then cuts them), and stops the
// admin server. It is safe to call more than once.
func (p *Process) Stop(ctx context.Context) error {
	var err error
	p.stopped.Do(func() {
		p.health.Shutdown()
		done := make(chan struct{})
		go func() {
			p.grpc.GracefulStop()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			p.grpc.Stop()
			<-done
		}
		err = p.admin.Shutdown(ctx)
		p.wg.Wait()
	})
	return err
}

// Fail reports the failure of something a service runs beside its servers (its raft host, its
// controller), so that Wait stops the service. It never blocks; later failures after the first
// are dropped.
func (p *Process) Fail(err error) {
	select {
	case p.errc <- err:
	default:
	}
}

// Wait blocks until ctx is cancelled or a listener fails, then stops, giving running calls
// grace to finish. It returns nil on a clean shutdown.
func (p *Process) Wait(ctx context.Context, grace time.Duration) error {
	return WaitThenStop(ctx, grace, p.errc, p.Stop)
}

// WaitThenStop blocks until ctx ends or errc delivers a failure, then calls stop with grace to
// finish; it returns the failure joined with stop's error, nil on a clean shutdown. Every
// service's Wait is this, with the service's own stop.
func WaitThenStop(ctx context.Context, grace time.Duration, errc <-chan error, stop func(context.Context) error) error {
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	return errors.Join(runErr, stop(sctx))
}
