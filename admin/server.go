package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Server serves the admin endpoints.
type Server struct {
	srv *http.Server
	mux *http.ServeMux
	ln  net.Listener
	log zerolog.Logger
}

// Listen binds addr and returns a server for the endpoints; ready reports
// readiness for /readyz. Serve must be called to answer requests.
func Listen(addr string, m *Metrics, ready func() bool, log zerolog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin_addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready: joining the group or restoring state", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	return &Server{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		mux: mux,
		ln:  ln,
		log: log,
	}, nil
}

// HandleSnapshot adds POST /state/snapshot: snapshot writes a snapshot of
// the running instance's state into a directory of its own choosing (the
// request names no path: an HTTP client cannot make kdedup write
// elsewhere) and returns a value answered as JSON, or an error answered
// as 500. kdedup state snapshot calls it when the store is in use.
func (s *Server) HandleSnapshot(snapshot func() (any, error)) {
	s.mux.HandleFunc("POST /state/snapshot", func(w http.ResponseWriter, _ *http.Request) {
		v, err := snapshot()
		if err != nil {
			s.log.Error().Err(err).Msg("snapshot")
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(v); err != nil {
			s.log.Warn().Err(err).Msg("answering a snapshot request")
		}
	})
}

// Addr returns the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve answers requests until ctx ends.
func (s *Server) Serve(ctx context.Context) {
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(sctx)
	}()
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error().Err(err).Msg("admin server")
	}
}
