package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Readiness reports whether the member is ready to serve, and why not.
type Readiness func() (ready bool, reason string)

// Server is the HTTP listener for /metrics, /healthz and /readyz.
type Server struct {
	lis net.Listener
	srv *http.Server
}

// Handler serves:
//
//	/metrics  Prometheus text format
//	/healthz  200 "ok" while the process serves HTTP at all (liveness)
//	/readyz   200 "ready" once a raft leader is known, this member is
//	          registered in the member table and has caught up with the
//	          leader; 503 with the reason otherwise
func (m *Metrics) Handler(ready Readiness) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{
		Registry: m.Registry, ErrorHandling: promhttp.ContinueOnError, Timeout: 10 * time.Second,
	}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		ok, why := ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: "+why)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "lbd: /metrics /healthz /readyz")
	})
	return mux
}

// Listen binds addr; Serve starts answering.
func Listen(addr string) (*Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &Server{lis: lis}, nil
}

// Addr is the address actually bound.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Serve answers with h until Close.
func (s *Server) Serve(h http.Handler, log *slog.Logger) {
	s.srv = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
	go func() {
		if err := s.srv.Serve(s.lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "addr", s.Addr(), "err", err)
		}
	}()
}

// Close stops the listener, letting scrapes in progress finish briefly.
func (s *Server) Close() error {
	if s.srv == nil {
		return s.lis.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}
