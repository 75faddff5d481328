package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"google.golang.org/grpc"

	"github.com/triarch-io/triarch/gen/openapi"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/arbiterclient"
	"github.com/triarch-io/triarch/pkg/auth"
	"github.com/triarch-io/triarch/pkg/grpcx"
	"github.com/triarch-io/triarch/pkg/identity"
	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/pkg/telemetry"
)

// Service is a running gateway: the gRPC API on Common.Listen and REST on HTTPAddr.
type Service struct {
	*process.Process
	// Router routes channels to their leaders.
	Router  *Router
	arbiter *arbiterclient.Client
	// stopWatch ends the watch of the arbiter's node states (nil without --arbiters).
	stopWatch context.CancelFunc
	conn      *grpc.ClientConn
	httpLis   net.Listener
	httpSrv   *http.Server
	stop      sync.Once
	stopErr   error
}

// Start validates cfg and starts serving gRPC and REST.
func Start(ctx context.Context, cfg Config, tel *telemetry.Telemetry) (*Service, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	createReplication := cfg.DefaultReplication
	if cfg.NoImplicitCreate {
		createReplication = 0 // Append never creates
	}
	// The public port takes clients without a certificate; the policy lets them call the
	// public API only.
	sec, err := grpcx.NewSecurity(grpcx.SecurityConfig{Files: cfg.TLS, Self: identity.ID{Role: identity.RoleGateway, Node: cfg.NodeID},
		Public: true, Log: tel.Logger})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	// One dialer for channelctls and replicas alike: the router dials both.
	dialInternal := sec.Dialer(tel, identity.RoleChannelctl, identity.RoleReplica)
	router, err := NewRouter(RouterConfig{
		Channelctls:       cfg.Channelctls,
		Dial:              func(addr string) (grpc.ClientConnInterface, error) { return dialInternal(addr) },
		CreateReplication: createReplication,
		DefaultTimeout:    cfg.RequestTimeout,
		Log:               tel.Logger,
		Meter:             tel.MeterProvider.Meter("github.com/triarch-io/triarch/services/gateway"),
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	authn, err := auth.New(cfg.Auth)
	if err != nil {
		_ = router.Close()
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if authn == nil {
		tel.Logger.Warn("no client authentication configured (--auth-tokens, --auth-jwks): every caller may do everything")
	}
	h := &handler{r: router, defaultReplication: cfg.DefaultReplication, noImplicitCreate: cfg.NoImplicitCreate, auth: authn,
		quotas: newQuotas(cfg.Quota, nil)}
	var arb *arbiterclient.Client
	if len(cfg.Arbiters) > 0 {
		arb, err = arbiterclient.New(arbiterclient.Config{Members: cfg.Arbiters, Log: tel.Logger,
			Dial: sec.Dialer(tel, identity.RoleArbiter)})
		if err != nil {
			_ = router.Close()
			return nil, fmt.Errorf("gateway: %w", err)
		}
		h.arbiter = arb
	}
	p, err := process.Start(cfg.Common, tel, process.Options{
		Services:      []string{triarchv1.TriarchService_ServiceDesc.ServiceName},
		Register:      func(s *grpc.Server) { triarchv1.RegisterTriarchServiceServer(s, h) },
		Ready:         router.Ready,
		ServerOptions: append(sec.ServerOptions(), grpcx.PublicServerOptions()...),
	})
	if err != nil {
		_ = router.Close()
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if len(cfg.Channelctls) == 0 {
		tel.Logger.Warn("no channelctl configured (--channelctls): channel calls answer Unavailable")
	}
	s := &Service{Process: p, Router: router, arbiter: arb}
	if arb != nil {
		wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		s.stopWatch = cancel
		go watchNodes(wctx, arb, router, tel.Logger)
	}
	if err := s.startHTTP(ctx, cfg, tel, sec); err != nil {
		_ = p.Stop(ctx)
		_ = router.Close()
		return nil, fmt.Errorf("gateway: %w", err)
	}
	return s, nil
}

func (s *Service) startHTTP(ctx context.Context, cfg Config, tel *telemetry.Telemetry, sec *grpcx.Security) error {
	// REST calls the gRPC API over loopback, as this gateway (with TLS, its certificate).
	conn, err := grpcx.Dial(s.Addr(), tel, sec.DialOption(identity.RoleGateway))
	if err != nil {
		return fmt.Errorf("dial own gRPC server: %w", err)
	}
	gw := newRESTMux()
	if err := triarchv1.RegisterTriarchServiceHandler(ctx, gw, conn); err != nil {
		_ = conn.Close()
		return fmt.Errorf("register REST handlers: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openapi.JSON)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("/", restMiddleware(gw))
	lis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("listen on --http-addr %q: %w", cfg.HTTPAddr, err)
	}
	s.conn, s.httpLis = conn, lis
	s.httpSrv = &http.Server{
		Handler: otelhttp.NewHandler(mux, "gateway.rest",
			otelhttp.WithTracerProvider(tel.TracerProvider),
			otelhttp.WithMeterProvider(tel.MeterProvider),
			otelhttp.WithPropagators(tel.Propagator)),
		ReadHeaderTimeout: 10 * time.Second,
		// The request, body included, is read within ReadTimeout. No WriteTimeout: a REST
		// subscription writes for as long as it lasts.
		ReadTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute,
	}
	go func() {
		if err := s.httpSrv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.Fail(fmt.Errorf("rest serve: %w", err))
		}
	}()
	tel.Logger.Info("serving REST", "http", lis.Addr().String())
	return nil
}

// HTTPAddr is the bound REST address.
func (s *Service) HTTPAddr() string { return s.httpLis.Addr().String() }

// Wait blocks until ctx ends or a listener fails, then stops REST first (so no request arrives
// at a stopped gRPC server) and the gRPC process after it.
func (s *Service) Wait(ctx context.Context, grace time.Duration) error {
	return process.WaitThenStop(ctx, grace, s.Err(), s.Stop)
}

// Stop ends subscriptions (they answer Unavailable, so clients resume elsewhere), stops REST,
// then the gRPC process once unary calls have drained, and closes the connections to
// channelctls and replicas. It is safe to call more than once.
func (s *Service) Stop(ctx context.Context) error {
	s.stop.Do(func() {
		if s.stopWatch != nil {
			s.stopWatch()
		}
		s.Router.StopStreams()
		herr := s.httpSrv.Shutdown(ctx)
		cerr := s.conn.Close()
		perr := s.Process.Stop(ctx)
		var aerr error
		if s.arbiter != nil {
			aerr = s.arbiter.Close()
		}
		s.stopErr = errors.Join(herr, cerr, perr, s.Router.Close(), aerr)
	})
	return s.stopErr
}
