package admin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/kdedup/kdedup/consumer"
	"github.com/kdedup/kdedup/dedup"
	"github.com/kdedup/kdedup/internal/testcerts"
)

// fakeKeys holds live keys of stream "push" by key text, as a processor
// would: a forget must name the current ETag (or *).
type fakeKeys struct {
	mu   sync.Mutex
	live map[string]consumer.KeyState
	busy bool // answer ErrUnavailable
}

func (f *fakeKeys) find(q consumer.KeyQuery) (consumer.KeyState, error) {
	if q.Stream != "push" {
		return consumer.KeyState{}, fmt.Errorf("%w: %q", consumer.ErrUnknownStream, q.Stream)
	}
	if len(q.Scope) > 1 {
		return consumer.KeyState{}, fmt.Errorf("%w: %d given", dedup.ErrScope, len(q.Scope))
	}
	if f.busy {
		return consumer.KeyState{}, consumer.ErrUnavailable
	}
	ks, ok := f.live[q.Key]
	if !ok {
		return consumer.KeyState{Owned: []string{"push-events/0", "push-events/1"}}, consumer.ErrNotLive
	}
	return ks, nil
}

func (f *fakeKeys) LookupKey(_ context.Context, q consumer.KeyQuery) (consumer.KeyState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.find(q)
}

func (f *fakeKeys) ForgetKey(_ context.Context, q consumer.KeyQuery, m consumer.Match) (consumer.KeyState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ks, err := f.find(q)
	if err != nil {
		return ks, err
	}
	if !m.Any && !slices.Contains(m.ETags, ks.ETag) {
		return ks, consumer.ErrPrecondition
	}
	delete(f.live, q.Key)
	return ks, nil
}

func liveKey(etag string) consumer.KeyState {
	return consumer.KeyState{
		Entries: []consumer.KeyEntry{{Topic: "push-events", Partition: 1, Entry: dedup.Entry{
			Topic: "push-events", Partition: 1, Offset: 41, FirstSeen: 1000, Expiry: 3601000, Fingerprint: dedup.Fingerprint{0xab},
		}}},
		ETag:  etag,
		Owned: []string{"push-events/0", "push-events/1"},
	}
}

// keyServer serves HandleKeys over f on addr with opts.
func keyServer(t *testing.T, addr string, f *fakeKeys, opts ...Option) string {
	t.Helper()
	srv, err := Listen(addr, NewMetrics(), func() bool { return true }, zerolog.Nop(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	srv.HandleKeys(f, "host-1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	_, port, _ := strings.Cut(srv.Addr(), "]:")
	if port == "" {
		_, port, _ = strings.Cut(srv.Addr(), ":")
	}
	return "http://127.0.0.1:" + port
}

type answer struct {
	code int
	etag string
	body map[string]any
}

func call(t *testing.T, method, u string, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{code: resp.StatusCode, etag: resp.Header.Get("ETag")}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &a.body); err != nil {
			t.Fatalf("%s %s: %d body %q is not JSON: %v", method, u, resp.StatusCode, b, err)
		}
	}
	if a.code >= 400 && a.code < 500 {
		if msg, _ := a.body["error"].(string); msg == "" {
			t.Errorf("%s %s: %d without an error field: %s", method, u, a.code, b)
		}
	}
	return a
}

func TestKeysAPI(t *testing.T) {
	f := &fakeKeys{live: map[string]consumer.KeyState{"k1": liveKey(`"e1"`), "k2": liveKey(`"e2"`), "k3": liveKey(`"e3"`)}}
	base := keyServer(t, "127.0.0.1:0", f)
	key := func(k string, scope ...string) string {
		v := url.Values{"key": {k}}
		for _, s := range scope {
			v.Add("scope", s)
		}
		return base + "/v1/keys/push?" + v.Encode()
	}

	for _, tc := range []struct {
		name   string
		method string
		url    string
		hdr    []string
		code   int
		etag   string
		check  func(t *testing.T, a answer)
	}{
		{"get live", "GET", key("k1"), nil, 200, `"e1"`, func(t *testing.T, a answer) {
			want := map[string]any{"stream": "push", "key": "k1", "scope": []any{}, "partition": "push-events/1", "first": "push-events/1/41",
				"first_ts": 1000.0, "expires_ts": 3601000.0, "etag": `"e1"`, "instance": "host-1", "fingerprint": "ab000000000000000000000000000000"}
			for k, v := range want {
				if fmt.Sprint(a.body[k]) != fmt.Sprint(v) {
					t.Errorf("%s = %v, want %v", k, a.body[k], v)
				}
			}
		}},
		{"get not modified", "GET", key("k1"), []string{"If-None-Match", `W/"e1"`}, 304, `"e1"`, nil},
		{"get not live", "GET", key("nope"), nil, 404, "", func(t *testing.T, a answer) {
			if fmt.Sprint(a.body["partitions"]) != "[push-events/0 push-events/1]" {
				t.Errorf("partitions %v", a.body["partitions"])
			}
		}},
		{"get no key", "GET", base + "/v1/keys/push", nil, 400, "", nil},
		{"get empty key", "GET", base + "/v1/keys/push?key=", nil, 400, "", nil},
		{"get two keys", "GET", base + "/v1/keys/push?key=a&key=b", nil, 400, "", nil},
		{"get unknown stream", "GET", base + "/v1/keys/orders?key=k1", nil, 400, "", nil},
		{"get too many scope values", "GET", key("k1", "a", "b"), nil, 400, "", nil},
		{"delete without If-Match", "DELETE", key("k1"), nil, 428, "", nil},
		{"delete malformed If-Match", "DELETE", key("k1"), []string{"If-Match", "e1"}, 400, "", nil},
		{"delete empty If-Match", "DELETE", key("k1"), []string{"If-Match", " , "}, 400, "", nil},
		{"delete stale", "DELETE", key("k1"), []string{"If-Match", `"e0"`}, 412, `"e1"`, func(t *testing.T, a answer) {
			if a.body["etag"] != `"e1"` {
				t.Errorf("412 body etag %v", a.body["etag"])
			}
		}},
		{"delete weak never matches", "DELETE", key("k1"), []string{"If-Match", `W/"e1"`}, 412, `"e1"`, nil},
		{"delete current", "DELETE", key("k1"), []string{"If-Match", `"e0", "e1"`}, 204, "", nil},
		{"get forgotten", "GET", key("k1"), nil, 404, "", nil},
		{"delete forgotten", "DELETE", key("k1"), []string{"If-Match", "*"}, 404, "", nil},
		{"delete any", "DELETE", key("k2"), []string{"If-Match", "*"}, 204, "", nil},
		{"delete two header lines", "DELETE", key("k3"), []string{"If-Match", `"x"`, "If-Match", `"e3"`}, 204, "", nil},
		{"delete unknown stream", "DELETE", base + "/v1/keys/orders?key=k1", []string{"If-Match", "*"}, 400, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := call(t, tc.method, tc.url, tc.hdr...)
			if a.code != tc.code {
				t.Fatalf("%s %s: %d %v, want %d", tc.method, tc.url, a.code, a.body, tc.code)
			}
			if a.etag != tc.etag {
				t.Errorf("ETag %q, want %q", a.etag, tc.etag)
			}
			if tc.check != nil {
				tc.check(t, a)
			}
		})
	}

	t.Run("unavailable", func(t *testing.T) {
		f.mu.Lock()
		f.busy = true
		f.mu.Unlock()
		defer func() { f.mu.Lock(); f.busy = false; f.mu.Unlock() }()
		if a := call(t, "GET", key("k9")); a.code != 503 {
			t.Errorf("busy: %d, want 503", a.code)
		}
	})
}

// TestGuard checks who may reach /v1 and /state: with a token, only
// requests bearing it (401 otherwise); without one, anyone on a loopback
// address, nobody elsewhere (403); /healthz, /readyz and /metrics always.
func TestGuard(t *testing.T) {
	f := &fakeKeys{live: map[string]consumer.KeyState{}}
	guarded := "/v1/keys/push?key=k"

	t.Run("token", func(t *testing.T) {
		base := keyServer(t, "127.0.0.1:0", f, WithToken("s3cret"))
		for _, tc := range []struct {
			auth string
			code int
		}{
			{"", 401},
			{"Bearer wrong", 401},
			{"Basic s3cret", 401},
			{"Bearer s3cret", 404},
		} {
			if a := call(t, "GET", base+guarded, "Authorization", tc.auth); a.code != tc.code {
				t.Errorf("Authorization %q: %d, want %d", tc.auth, a.code, tc.code)
			}
		}
		if a := call(t, "POST", base+"/state/snapshot"); a.code != 401 {
			t.Errorf("/state/snapshot without the token: %d, want 401", a.code)
		}
		if a := call(t, "GET", base+"/debug/pprof/heap"); a.code != 401 {
			t.Errorf("/debug/pprof/heap without the token: %d, want 401", a.code)
		}
		req, _ := http.NewRequest("GET", base+"/debug/pprof/heap?debug=1", nil)
		req.Header.Set("Authorization", "Bearer s3cret")
		if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
			t.Errorf("/debug/pprof/heap with the token: %v %v", resp, err)
		} else {
			resp.Body.Close()
		}
		checkOpen(t, base)
	})
	t.Run("no token, every interface", func(t *testing.T) {
		base := keyServer(t, "0.0.0.0:0", f)
		a := call(t, "GET", base+guarded)
		if msg, _ := a.body["error"].(string); a.code != 403 || !strings.Contains(msg, "admin_token") {
			t.Errorf("no token on 0.0.0.0: %d %q, want 403 naming admin_token", a.code, msg)
		}
		checkOpen(t, base)
	})
	t.Run("no token, loopback", func(t *testing.T) {
		base := keyServer(t, "127.0.0.1:0", f)
		if a := call(t, "GET", base+guarded); a.code != 404 {
			t.Errorf("no token on 127.0.0.1: %d, want 404 (served)", a.code)
		}
	})
}

// checkOpen requires /healthz, /readyz and /metrics to answer 200 with
// no token.
func checkOpen(t *testing.T, base string) {
	t.Helper()
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if resp, err := http.Get(base + p); err != nil || resp.StatusCode != 200 {
			t.Errorf("%s: %v %v", p, resp, err)
		} else {
			resp.Body.Close()
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "127.0.0.2:1": true, "[::1]:8080": true, "localhost:8080": true,
		":8080": false, "0.0.0.0:8080": false, "10.0.0.1:8080": false, "[::]:8080": false, "example.com:80": false, "bad": false,
	} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestParseIfMatch(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want consumer.Match
		err  bool
	}{
		{[]string{"*"}, consumer.Match{Any: true}, false},
		{[]string{`"a"`}, consumer.Match{ETags: []string{`"a"`}}, false},
		{[]string{`"a", W/"b" ,"c"`}, consumer.Match{ETags: []string{`"a"`, `W/"b"`, `"c"`}}, false},
		{[]string{`"a"`, `"b"`}, consumer.Match{ETags: []string{`"a"`, `"b"`}}, false},
		{[]string{`""`}, consumer.Match{ETags: []string{`""`}}, false},
		{[]string{""}, consumer.Match{}, true},
		{[]string{"a"}, consumer.Match{}, true},
		{[]string{`"a`}, consumer.Match{}, true},
		{[]string{`"a" "b"`}, consumer.Match{}, true},
		{[]string{`"a b"`}, consumer.Match{}, true},
		{[]string{`W/a`}, consumer.Match{}, true},
		{[]string{`**`}, consumer.Match{}, true},
	} {
		got, err := parseIfMatch(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("parseIfMatch(%q) error %v, want error %v", tc.in, err, tc.err)
			continue
		}
		if err != nil && !errors.Is(err, ErrIfMatch) {
			t.Errorf("parseIfMatch(%q) = %v, want ErrIfMatch", tc.in, err)
		}
		if got.Any != tc.want.Any || !slices.Equal(got.ETags, tc.want.ETags) {
			t.Errorf("parseIfMatch(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

// FuzzParseIfMatch checks that parseIfMatch never panics, and that what
// it accepts is "*" or well-formed quoted tags.
func FuzzParseIfMatch(f *testing.F) {
	for _, s := range []string{"*", `"a"`, `"a", W/"b"`, `W/"`, `,,`, "\"\x00\""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseIfMatch([]string{s})
		if err != nil {
			return
		}
		for _, tag := range m.ETags {
			tag = strings.TrimPrefix(tag, "W/")
			if len(tag) < 2 || tag[0] != '"' || tag[len(tag)-1] != '"' || strings.Contains(tag[1:len(tag)-1], `"`) {
				t.Errorf("parseIfMatch(%q) accepted tag %q", s, tag)
			}
		}
	})
}

// TestTLS serves the API over HTTPS with a test authority's certificate.
func TestTLS(t *testing.T) {
	certs, err := testcerts.Generate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen("127.0.0.1:0", NewMetrics(), func() bool { return true }, zerolog.Nop(), WithTLS(certs.ServerCert, certs.ServerCert)); err == nil || !strings.Contains(err.Error(), "admin_tls") {
		t.Errorf("a certificate without its key: %v, want an admin_tls error", err)
	}
	f := &fakeKeys{live: map[string]consumer.KeyState{"k1": liveKey(`"e1"`)}}
	base := strings.Replace(keyServer(t, "127.0.0.1:0", f, WithTLS(certs.ServerCert, certs.ServerKey), WithToken("t")), "http://", "https://", 1)
	caPEM, err := os.ReadFile(certs.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no certificate in the test authority's PEM")
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest("GET", base+"/v1/keys/push?key=k1", nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("ETag") != `"e1"` {
		t.Errorf("over HTTPS: %d %q", resp.StatusCode, resp.Header.Get("ETag"))
	}
	if resp, err := http.Get(strings.Replace(base, "https://", "http://", 1) + "/healthz"); err == nil && resp.StatusCode == 200 {
		t.Errorf("plain HTTP answered 200 on the HTTPS listener")
	}
}
