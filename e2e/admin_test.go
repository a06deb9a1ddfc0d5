package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/internal/e2e"
)

// freeAddr returns a loopback host:port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// httpAnswer is an admin API answer.
type httpAnswer struct {
	code int
	etag string
	body map[string]any
}

func (a httpAnswer) str(k string) string { s, _ := a.body[k].(string); return s }

// request sends one admin API request; hdr are header name, value pairs.
func request(t *testing.T, method, u string, hdr ...string) httpAnswer {
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
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := httpAnswer{code: resp.StatusCode, etag: resp.Header.Get("ETag")}
	if len(b) > 0 && json.Unmarshal(b, &a.body) != nil {
		t.Fatalf("%s %s: %d answered %q, not JSON", method, u, a.code, b)
	}
	if a.code >= 400 && a.code < 500 && a.str("error") == "" {
		t.Errorf("%s %s: %d without an error field: %s", method, u, a.code, b)
	}
	return a
}

// waitFor repeats a request until its answer satisfies ok, or fails after
// a minute. The state an answer reflects changes when a transaction
// commits, which the test cannot observe otherwise.
func waitFor(t *testing.T, what string, ok func(httpAnswer) bool, method, u string, hdr ...string) httpAnswer {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		a := request(t, method, u, hdr...)
		if ok(a) {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: last answer %d %v", what, a.code, a.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cli runs kdedup with args and returns its stdout and exit status.
func cli(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return cliEnv(t, nil, args...)
}

// cliEnv is cli with env (NAME=value) added to the environment.
func cliEnv(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("kdedup %v: %v", args, err)
	}
	if code != 0 {
		t.Logf("kdedup %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	}
	return stdout.String(), code
}

// keyRecords reads topic under read_committed until it holds want
// records whose header name is value, then for a second more, and
// returns them all: more than want is a failure the caller sees.
func keyRecords(t *testing.T, e *env, topic, name, value string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(e.conn(kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var got []*kgo.Record
	deadline := time.Now().Add(time.Minute)
	var quietUntil time.Time
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == name && string(h.Value) == value {
					got = append(got, r)
					break
				}
			}
		})
		now := time.Now()
		switch {
		case len(got) >= want && quietUntil.IsZero():
			quietUntil = now.Add(time.Second)
		case len(got) >= want && now.After(quietUntil):
			return got
		case now.After(deadline):
			t.Fatalf("%s: %d records with %s=%s, want %d", topic, len(got), name, value, want)
		}
	}
}

func header(r *kgo.Record, name string) string {
	v := ""
	for _, h := range r.Headers {
		if h.Key == name {
			v = string(h.Value)
		}
	}
	return v
}

// TestAdminKeys drives the key admin API of running kdedup processes on
// three brokers through every status code it answers, and shows that a
// forgotten key passes again exactly once and stays forgotten across a
// SIGKILL and two handovers; it runs kdedup keys and kdedup audit
// tail/stats/show against the same run.
func TestAdminKeys(t *testing.T) {
	e := fakeSetup(t, threeBrokers)
	const token = "e2e-admin-token"
	addrA := freeAddr(t)
	cfgA := e.config(t, "a", "admin_addr: "+addrA+"\n")
	env := []string{"KDEDUP_ADMIN_TOKEN=" + token}
	a := startEnv(t, cfgA, env)
	cfgFile := filepath.Join(t.TempDir(), "kdedup.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfgA), 0o644); err != nil {
		t.Fatal(err)
	}
	// Records go where the test says: partition 0 (push), 1 (order).
	cl, err := kgo.NewClient(e.conn(kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const key = "forget-me-1"
	send := func() int64 {
		t.Helper()
		r := &kgo.Record{Topic: e.tp.PushInput, Partition: 0, Value: []byte(`{"user_id":1,"template_id":2,"body":"hello"}`),
			Headers: []kgo.RecordHeader{{Key: "Idempotency-Key", Value: []byte(key)}, {Key: "tenant-id", Value: []byte("t1")}}}
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		return r.Offset
	}
	base := "http://" + addrA
	keyURL := base + "/v1/keys/push?" + url.Values{"key": {key}, "scope": {"t1"}}.Encode()
	auth := []string{"Authorization", "Bearer " + token}
	withAuth := func(hdr ...string) []string { return append(append([]string(nil), auth...), hdr...) }

	off1 := send()
	live := func(first int64) func(httpAnswer) bool {
		return func(a httpAnswer) bool {
			return a.code == 200 && a.str("first") == e.tp.PushInput+"/0/"+strconv.FormatInt(first, 10)
		}
	}
	got := waitFor(t, "the first copy live", live(off1), "GET", keyURL, auth...)
	etag1 := got.etag
	if etag1 == "" || got.str("etag") != etag1 || got.str("stream") != "push" || got.str("key") != key ||
		got.str("partition") != e.tp.PushInput+"/0" || fmt.Sprint(got.body["scope"]) != "[t1]" || got.str("instance") != "a" {
		t.Fatalf("GET of a live key: ETag %q body %v", etag1, got.body)
	}
	if ft, ex := got.body["first_ts"].(float64), got.body["expires_ts"].(float64); ex-ft != float64(e2e.PushTTL.Milliseconds()) {
		t.Errorf("expires_ts - first_ts = %v, want the ttl %v", ex-ft, e2e.PushTTL)
	}

	for _, tc := range []struct {
		name, method, url string
		hdr               []string
		code              int
	}{
		{"no token", "GET", keyURL, nil, 401},
		{"wrong token", "GET", keyURL, []string{"Authorization", "Bearer nope"}, 401},
		{"no key", "GET", base + "/v1/keys/push", auth, 400},
		{"unknown stream", "GET", base + "/v1/keys/nosuch?key=" + key, auth, 400},
		{"too many scope values", "GET", keyURL + "&scope=extra", auth, 400},
		{"another tenant's key", "GET", base + "/v1/keys/push?key=" + key + "&scope=t2", auth, 404},
		{"delete without If-Match", "DELETE", keyURL, auth, 428},
		{"delete with a malformed If-Match", "DELETE", keyURL, withAuth("If-Match", "not-quoted"), 400},
		{"delete with a stale ETag", "DELETE", keyURL, withAuth("If-Match", `"0123456789abcdef01234567"`), 412},
		{"snapshot without the token", "POST", base + "/state/snapshot", nil, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := request(t, tc.method, tc.url, tc.hdr...)
			if got.code != tc.code {
				t.Fatalf("%d %v, want %d", got.code, got.body, tc.code)
			}
			switch tc.code {
			case 404:
				if fmt.Sprint(got.body["partitions"]) != fmt.Sprintf("[%[1]s/0 %[1]s/1 %[1]s/2]", e.tp.PushInput) {
					t.Errorf("404 partitions %v", got.body["partitions"])
				}
			case 412:
				if got.etag != etag1 {
					t.Errorf("412 ETag %q, want the current %q", got.etag, etag1)
				}
			}
		})
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if got, err := http.Get(base + p); err != nil || got.StatusCode != 200 {
			t.Errorf("%s without a token: %v %v", p, got, err)
		} else {
			got.Body.Close()
		}
	}

	if got := request(t, "DELETE", keyURL, withAuth("If-Match", etag1)...); got.code != 204 {
		t.Fatalf("DELETE with the current ETag: %d %v", got.code, got.body)
	}
	if got := request(t, "GET", keyURL, auth...); got.code != 404 {
		t.Fatalf("GET of a forgotten key: %d %v", got.code, got.body)
	}
	if got := request(t, "DELETE", keyURL, withAuth("If-Match", "*")...); got.code != 404 {
		t.Errorf("DELETE * of a forgotten key: %d, want 404", got.code)
	}
	keysArgs := []string{"--config", cfgFile, "--stream", "push", "--key", key, "--scope", "t1"}
	if out, code := cliEnv(t, env, append([]string{"keys", "get"}, keysArgs...)...); code == 0 || !strings.Contains(out, "not live") {
		t.Errorf("kdedup keys get of a forgotten key: exit %d\n%s", code, out)
	}

	// The key passes again, once: the next copy is first-seen, the one
	// after it a duplicate of that copy.
	off2 := send()
	got = waitFor(t, "the copy after the forget live", live(off2), "GET", keyURL, auth...)
	etag2 := got.etag
	if etag2 == etag1 {
		t.Errorf("the new first-seen entry has the forgotten one's ETag")
	}
	send()
	if out, code := cliEnv(t, env, append([]string{"keys", "get", "--admin", addrA}, keysArgs...)...); code != 0 || !strings.Contains(out, "instance a owns") || !strings.Contains(out, etag2) {
		t.Errorf("kdedup keys get: exit %d\n%s", code, out)
	}
	if out, code := cliEnv(t, env, append([]string{"keys", "forget", "--if-match", etag1}, keysArgs...)...); code != 1 || !strings.Contains(out, "ETag is now "+etag2) {
		t.Errorf("kdedup keys forget with a stale ETag: exit %d, want 1\n%s", code, out)
	}

	// A SIGKILL, then a restart on the same state.
	keyRecords(t, e, e.tp.Audit, "dedup.key", key, 2) // the forget and the duplicate, committed
	a.kill()
	a = startEnv(t, cfgA, env)
	waitFor(t, "the entry after a SIGKILL", live(off2), "GET", keyURL, auth...)

	// A handover to b (its admin API on every interface, with no token:
	// refused), and a copy b must audit as a duplicate of the second
	// copy, not of the forgotten first.
	addrB := "0.0.0.0:" + strings.Split(freeAddr(t), ":")[1]
	b := start(t, e.config(t, "b", "admin_addr: "+addrB+"\n"))
	baseB := "http://127.0.0.1:" + strings.Split(addrB, ":")[1]
	if got := request(t, "GET", baseB+"/v1/keys/push?key="+key); got.code != 403 || !strings.Contains(got.str("error"), "admin_token") {
		t.Errorf("b's API without a token on 0.0.0.0: %d %v, want 403 naming admin_token", got.code, got.body)
	}
	if got, err := http.Get(baseB + "/healthz"); err != nil || got.StatusCode != 200 {
		t.Errorf("b's /healthz: %v %v", got, err)
	} else {
		got.Body.Close()
	}
	a.stop(t)
	send()
	keyRecords(t, e, e.tp.Audit, "dedup.key", key, 3) // b decided it
	// Back to a, whose state is now behind: restored from the changelog.
	b.stop(t)
	a = startEnv(t, cfgA, env)
	if got := waitFor(t, "the entry after two handovers", live(off2), "GET", keyURL, auth...); got.etag != etag2 {
		t.Errorf("ETag after two handovers %q, want %q", got.etag, etag2)
	}

	outs := keyRecords(t, e, e.tp.PushOutput, "Idempotency-Key", key, 2)
	audits := keyRecords(t, e, e.tp.Audit, "dedup.key", key, 3)
	if len(outs) != 2 || len(audits) != 3 {
		t.Fatalf("key %s: %d outputs (want 2: the first copy and the one after the forget), %d audit records (want 3)", key, len(outs), len(audits))
	}
	first2 := e.tp.PushInput + "/0/" + strconv.FormatInt(off2, 10)
	var reasons []string
	for _, r := range audits {
		reasons = append(reasons, header(r, "dedup.reason"))
		if header(r, "dedup.reason") == "duplicate" && header(r, "dedup.first") != first2 {
			t.Errorf("duplicate of %s, want of %s (the copy after the forget)", header(r, "dedup.first"), first2)
		}
	}
	if strings.Join(reasons, ",") != "forgotten,duplicate,duplicate" {
		t.Errorf("audit reasons %v, want forgotten, duplicate, duplicate", reasons)
	}
	if f := audits[0]; len(f.Value) != 0 || header(f, "dedup.stream") != "push" || header(f, "dedup.first") != e.tp.PushInput+"/0/"+strconv.FormatInt(off1, 10) {
		t.Errorf("forgotten record: value %q headers %v", f.Value, f.Headers)
	}

	t.Run("refresh changes the ETag", func(t *testing.T) {
		token := "5f0c2b7e-1d2a-4c3b-9e8f-0a1b2c3d4e5f"
		sendOrder := func(ts time.Time) {
			r := &kgo.Record{Topic: e.tp.OrderInput, Partition: 1, Timestamp: ts, Value: []byte(`{"tenant_id":"t9","amount":5,"currency":"EUR"}`),
				Headers: []kgo.RecordHeader{{Key: "X-Client-Token", Value: []byte(token)}}}
			if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		orderURL := base + "/v1/keys/order?" + url.Values{"key": {token}, "scope": {"t9"}}.Encode()
		now := time.Now()
		sendOrder(now)
		before := waitFor(t, "the order live", func(a httpAnswer) bool { return a.code == 200 }, "GET", orderURL, auth...)
		sendOrder(now.Add(time.Minute))
		after := waitFor(t, "the order refreshed", func(a httpAnswer) bool { return a.code == 200 && a.etag != before.etag }, "GET", orderURL, auth...)
		if after.body["expires_ts"].(float64)-before.body["expires_ts"].(float64) != float64(time.Minute.Milliseconds()) {
			t.Errorf("expiry %v then %v: want it a minute later", before.body["expires_ts"], after.body["expires_ts"])
		}
	})

	t.Run("audit cli", func(t *testing.T) {
		out, code := cli(t, "audit", "tail", "--config", cfgFile, "--key", key, "--from-beginning", "-o", "json")
		if code != 0 {
			t.Fatalf("audit tail: exit %d", code)
		}
		var tailed []string
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			var rec struct {
				Topic     string            `json:"topic"`
				Partition int32             `json:"partition"`
				Offset    int64             `json:"offset"`
				Headers   map[string]string `json:"headers"`
			}
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				t.Fatalf("audit tail -o json line %q: %v", sc.Text(), err)
			}
			tailed = append(tailed, rec.Headers["dedup.reason"])
		}
		if strings.Join(tailed, ",") != "forgotten,duplicate,duplicate" {
			t.Errorf("audit tail --key %s: reasons %v\n%s", key, tailed, out)
		}
		out, code = cli(t, "audit", "stats", "--config", cfgFile, "--from-beginning")
		if code != 0 || !strings.Contains(out, "forgotten") || !strings.Contains(out, "duplicate") || !strings.Contains(out, key) {
			t.Errorf("audit stats: exit %d\n%s", code, out)
		}
		dup := audits[1]
		out, code = cli(t, "audit", "show", "--config", cfgFile, fmt.Sprintf("%s/%d/%d", dup.Topic, dup.Partition, dup.Offset))
		if code != 0 || !strings.Contains(out, first2) {
			t.Errorf("audit show of a duplicate: exit %d, want its first-seen record %s\n%s", code, first2, out)
		}
		if _, code := cli(t, "audit", "show", "--config", cfgFile, "not-a-coordinate"); code == 0 {
			t.Errorf("audit show of a malformed coordinate: exit 0")
		}
	})
	// kdedup keys forget --force, the way an operator forgets a key.
	if out, code := cliEnv(t, env, append([]string{"keys", "forget", "--force"}, keysArgs...)...); code != 0 || !strings.Contains(out, "forgotten") {
		t.Errorf("kdedup keys forget --force: exit %d\n%s", code, out)
	}
	if got := request(t, "GET", keyURL, auth...); got.code != 404 {
		t.Errorf("GET after kdedup keys forget --force: %d", got.code)
	}
	a.stop(t)
}
