package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/kdedup/kdedup/config"
)

// adminClient calls the admin endpoints of kdedup instances with the
// configuration's admin token and TLS settings.
type adminClient struct {
	hc     *http.Client
	token  string
	scheme string
}

// newAdminClient returns the client for cfg: HTTPS when admin_tls is set
// (verifying with admin_tls.ca_file, or the system's roots), the bearer
// token when one is configured.
func newAdminClient(cfg *config.Config, timeout time.Duration) (*adminClient, error) {
	token, err := cfg.ReadAdminToken()
	if err != nil {
		return nil, err
	}
	c := &adminClient{hc: &http.Client{Timeout: timeout}, token: token, scheme: "http"}
	if cfg.AdminTLS.On() {
		c.scheme = "https"
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.AdminTLS.CAFile != "" {
			pem, err := os.ReadFile(cfg.AdminTLS.CAFile)
			if err != nil {
				return nil, fmt.Errorf("admin_tls.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("admin_tls.ca_file: %s holds no PEM certificate", cfg.AdminTLS.CAFile)
			}
			tc.RootCAs = pool
		}
		c.hc.Transport = &http.Transport{TLSClientConfig: tc}
	}
	return c, nil
}

// base returns the URL of the instance at addr: addr itself when it is a
// URL, else scheme://addr, with a host that listens on every interface
// (":8080", "0.0.0.0:8080") reached on the loopback address.
func (c *adminClient) base(addr string) string {
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		return strings.TrimSuffix(addr, "/")
	}
	if host, port, err := net.SplitHostPort(addr); err == nil {
		switch host {
		case "", "0.0.0.0":
			addr = net.JoinHostPort("127.0.0.1", port)
		case "::":
			addr = net.JoinHostPort("::1", port)
		}
	}
	return c.scheme + "://" + addr
}

// do sends a request to the instance at addr and returns the answer's
// status, headers and body (at most 1 MiB).
func (c *adminClient) do(ctx context.Context, method, addr, pathQuery string, hdr http.Header) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base(addr)+pathQuery, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header, body, err
}

// keyAnswer is one instance's answer to kdedup keys, as -o json prints
// it.
type keyAnswer struct {
	Admin  string          `json:"admin"`
	Status int             `json:"status"`
	ETag   string          `json:"etag,omitempty"`
	Body   json.RawMessage `json:"body,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// keysCmd runs kdedup keys get|forget.
func keysCmd(args, env []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "get" && args[0] != "forget") {
		fmt.Fprint(stderr, "kdedup keys: want get or forget\n\n"+usage)
		return 2
	}
	sub := args[0]
	var (
		stream, key, ifMatch, admins, output string
		scope                                stringList
		force                                bool
		timeout                              time.Duration
	)
	cfg, ok := loadConfigWith("keys "+sub, args[1:], env, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&stream, "stream", "", "the stream's name (required)")
		fs.StringVar(&key, "key", "", "the idempotency key, as its source gives it (required)")
		fs.Var(&scope, "scope", "a scope value, in the order the stream's scope lists its parts (repeatable; a missing one is \"\")")
		fs.StringVar(&admins, "admin", "", "admin addresses (host:port or URL) of the instances to ask, comma-separated (default: the configuration's admin_addr)")
		fs.StringVar(&output, "o", "text", "output: text or json")
		fs.DurationVar(&timeout, "timeout", 40*time.Second, "how long to wait for each instance")
		if sub == "forget" {
			fs.StringVar(&ifMatch, "if-match", "", "forget only if the key's entry still has this ETag (from kdedup keys get)")
			fs.BoolVar(&force, "force", false, "forget whatever entry is live (If-Match: *)")
		}
	})
	if !ok {
		return 2
	}
	switch {
	case stream == "" || key == "":
		fmt.Fprintf(stderr, "kdedup keys %s: --stream and --key are required\n", sub)
		return 2
	case output != "text" && output != "json":
		fmt.Fprintf(stderr, "kdedup keys %s: -o must be text or json, got %q\n", sub, output)
		return 2
	case force && ifMatch != "":
		fmt.Fprintf(stderr, "kdedup keys forget: --if-match and --force exclude each other\n")
		return 2
	}
	if admins == "" {
		admins = cfg.AdminAddr
	}
	var addrs []string
	for _, a := range strings.Split(admins, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		fmt.Fprintf(stderr, "kdedup keys %s: no admin address: give --admin host:port,... or set admin_addr\n", sub)
		return 2
	}
	cl, err := newAdminClient(cfg, timeout)
	if err != nil {
		fmt.Fprintf(stderr, "kdedup keys: %v\n", err)
		return 2
	}
	q := url.Values{"key": {key}}
	for _, s := range scope {
		q.Add("scope", s)
	}
	pathQuery := "/v1/keys/" + url.PathEscape(stream) + "?" + q.Encode()
	method, hdr := http.MethodGet, http.Header{}
	if sub == "forget" {
		method = http.MethodDelete
		switch {
		case force:
			hdr.Set("If-Match", "*")
		case ifMatch != "":
			if !strings.HasPrefix(ifMatch, `"`) && !strings.HasPrefix(ifMatch, `W/"`) {
				ifMatch = `"` + ifMatch + `"` // as printed without its quotes
			}
			hdr.Set("If-Match", ifMatch)
		}
	}
	answers := make([]keyAnswer, len(addrs))
	for i, addr := range addrs {
		a := keyAnswer{Admin: addr}
		code, h, body, err := cl.do(context.Background(), method, addr, pathQuery, hdr)
		if err != nil {
			a.Error = err.Error()
		} else {
			a.Status, a.ETag = code, h.Get("ETag")
			if json.Valid(body) {
				a.Body = body
			}
			var e struct {
				Error string `json:"error"`
			}
			if code >= 400 && json.Unmarshal(body, &e) == nil {
				a.Error = e.Error
			} else if code >= 400 {
				a.Error = strings.TrimSpace(string(body))
			}
		}
		answers[i] = a
	}
	code := keysOutcome(sub, answers)
	if output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(answers); err != nil {
			fmt.Fprintf(stderr, "kdedup keys: %v\n", err)
			return 1
		}
		return code
	}
	printKeyAnswers(stdout, sub, stream, key, answers)
	return code
}

// keysOutcome is kdedup keys' exit status: 0 when an instance holds the
// key (get) or forgot it (forget, and none refused it); 1 otherwise (the
// key not live on any instance asked, a stale ETag, an instance that
// could not be asked and no other answered).
func keysOutcome(sub string, answers []keyAnswer) int {
	ok := false
	for _, a := range answers {
		switch a.Status {
		case http.StatusPreconditionFailed, http.StatusPreconditionRequired, http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden:
			return 1
		case http.StatusOK:
			ok = ok || sub == "get"
		case http.StatusNoContent:
			ok = ok || sub == "forget"
		}
	}
	if ok {
		return 0
	}
	return 1
}

// printKeyAnswers prints the answers for a terminal: the instance that
// owns the key, its entry, or why not.
func printKeyAnswers(w io.Writer, sub, stream, key string, answers []keyAnswer) {
	for _, a := range answers {
		switch {
		case a.Status == 0:
			fmt.Fprintf(w, "%s: not reached: %s\n", a.Admin, a.Error)
		case a.Status == http.StatusOK:
			var b struct {
				Instance  string `json:"instance"`
				Partition string `json:"partition"`
				First     string `json:"first"`
				FirstTS   int64  `json:"first_ts"`
				ExpiresTS int64  `json:"expires_ts"`
			}
			_ = json.Unmarshal(a.Body, &b)
			fmt.Fprintf(w, "%s: instance %s owns key %q of stream %s\n", a.Admin, b.Instance, key, stream)
			fmt.Fprintf(w, "  partition  %s\n  first      %s at %s\n  expires    %s\n  etag       %s\n",
				b.Partition, b.First, time.UnixMilli(b.FirstTS).UTC().Format(time.RFC3339Nano), time.UnixMilli(b.ExpiresTS).UTC().Format(time.RFC3339Nano), a.ETag)
		case a.Status == http.StatusNoContent:
			fmt.Fprintf(w, "%s: forgotten: the next record with key %q is first_seen\n", a.Admin, key)
		case a.Status == http.StatusNotFound:
			var b struct {
				Instance   string   `json:"instance"`
				Partitions []string `json:"partitions"`
			}
			_ = json.Unmarshal(a.Body, &b)
			fmt.Fprintf(w, "%s: not live on instance %s (it owns %s)\n", a.Admin, b.Instance, strings.Join(b.Partitions, ", "))
		case a.Status == http.StatusPreconditionFailed:
			fmt.Fprintf(w, "%s: refused: the entry changed since it was read; its ETag is now %s (kdedup keys get shows it)\n", a.Admin, a.ETag)
		case a.Status == http.StatusPreconditionRequired:
			fmt.Fprintf(w, "%s: refused: give --if-match ETAG (from kdedup keys get) or --force\n", a.Admin)
		default:
			fmt.Fprintf(w, "%s: %d %s: %s\n", a.Admin, a.Status, http.StatusText(a.Status), a.Error)
		}
	}
	if sub == "get" && keysOutcome(sub, answers) != 0 {
		fmt.Fprintf(w, "key %q of stream %s is not live on any instance asked\n", key, stream)
	}
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
