package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Server serves the admin endpoints: /healthz, /readyz and /metrics,
// always open; the state endpoints (/state/...), the key admin API
// (/v1/...) and Go's profiles (/debug/pprof/...), guarded (guard): with a token, by "Authorization: Bearer";
// without one, served only on a loopback address.
//
// Handlers run on net/http's goroutines; what they call (Metrics, the
// processor's key requests, a snapshot) is safe for concurrent use.
type Server struct {
	srv      *http.Server
	mux      *http.ServeMux
	ln       net.Listener
	log      zerolog.Logger
	token    []byte // sha256 of the admin token; nil: none
	loopback bool   // the listen address is a loopback one
	certFile string
	keyFile  string
}

// Option configures a Server.
type Option func(*Server)

// WithToken guards /v1/... and /state/... with a bearer token: a request
// without "Authorization: Bearer <token>" is answered 401. Default: no
// token, and those endpoints are served only when the listen address is
// a loopback one (403 otherwise): whoever reaches the port could make a
// key pass twice.
func WithToken(token string) Option {
	return func(s *Server) {
		if token != "" {
			sum := sha256.Sum256([]byte(token))
			s.token = sum[:]
		}
	}
}

// WithTLS serves HTTPS with the PEM certificate and key files. Default:
// plain HTTP.
func WithTLS(certFile, keyFile string) Option {
	return func(s *Server) { s.certFile, s.keyFile = certFile, keyFile }
}

// Listen binds addr and returns a server for the endpoints; ready reports
// readiness for /readyz. Serve must be called to answer requests.
func Listen(addr string, m *Metrics, ready func() bool, log zerolog.Logger, opts ...Option) (*Server, error) {
	s := &Server{mux: http.NewServeMux(), log: log, loopback: isLoopback(addr)}
	for _, o := range opts {
		o(s)
	}
	if s.certFile != "" {
		// Fail now, naming the field, rather than on the first request.
		if _, err := tls.LoadX509KeyPair(s.certFile, s.keyFile); err != nil {
			return nil, fmt.Errorf("admin_tls: %w", err)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin_addr %s: %w", addr, err)
	}
	s.ln = ln
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready: joining the group or restoring state", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	// Go's profiles of the running process (heap, CPU, goroutines),
	// guarded like the admin API: a profile shows keys in memory.
	s.mux.HandleFunc("/debug/pprof/", pprof.Index)
	s.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	s.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.srv = &http.Server{Handler: s.guard(s.mux), ReadHeaderTimeout: 5 * time.Second}
	return s, nil
}

// isLoopback reports whether addr (host:port) listens on a loopback
// address only: 127.0.0.0/8, ::1 or localhost. An empty host listens on
// every interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// guarded reports whether a path is one of the guarded endpoints.
func guarded(path string) bool {
	return strings.HasPrefix(path, "/v1/") || strings.HasPrefix(path, "/state/") || strings.HasPrefix(path, "/debug/")
}

// guard checks the token (or the loopback rule) of guarded requests
// before next sees them.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !guarded(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		if s.token == nil {
			if !s.loopback {
				writeError(w, http.StatusForbidden, "the admin API is served on a non-loopback admin_addr only with admin_token set (or admin_token_file, or KDEDUP_ADMIN_TOKEN): set one, or listen on 127.0.0.1", nil)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if !ok || subtle.ConstantTimeCompare(sum[:], s.token) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kdedup"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token: send Authorization: Bearer <admin_token>", nil)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// writeError answers code with a JSON body {"error": msg} plus extra's
// fields.
func writeError(w http.ResponseWriter, code int, msg string, extra map[string]any) {
	body := map[string]any{"error": msg}
	maps.Copy(body, extra)
	writeJSON(w, code, body)
}

// writeJSON answers code with v as JSON.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client went away: nothing to do
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
	var err error
	if s.certFile != "" {
		err = s.srv.ServeTLS(s.ln, s.certFile, s.keyFile)
	} else {
		err = s.srv.Serve(s.ln)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error().Err(err).Msg("admin server")
	}
}
