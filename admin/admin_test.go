package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/kdedup/kdedup/dedup"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	m := NewMetrics()
	var ready atomic.Bool
	srv, err := Listen("127.0.0.1:0", m, ready.Load, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	base := "http://" + srv.Addr()

	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d", code)
	}
	if code, _ := get(t, base+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz %d before ready, want 503", code)
	}
	ready.Store(true)
	if code, _ := get(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz %d when ready, want 200", code)
	}

	m.Decided("push", dedup.FirstSeen, 1)
	m.Decided("push", dedup.Duplicate, 1)
	m.Decided("push", dedup.Duplicate, 1)
	m.Transaction(true, 3*time.Millisecond, 3)
	m.Transaction(false, time.Millisecond, 1)
	m.Keys("push-events", 2, 41)
	m.Restored("push-events", 2, 5, 10)
	_, body := get(t, base+"/metrics")
	for _, want := range []string{
		`kdedup_events_in_total{stream="push"} 3`,
		`kdedup_decisions_total{reason="duplicate",stream="push"} 2`,
		`kdedup_transactions_total{outcome="committed"} 1`,
		`kdedup_transactions_total{outcome="aborted"} 1`,
		`kdedup_commit_seconds_count 2`,
		`kdedup_state_keys{partition="2",topic="push-events"} 41`,
		`kdedup_restore_records{partition="2",topic="push-events"} 5`,
		`kdedup_restore_records_total{partition="2",topic="push-events"} 10`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestListenBusyAddress(t *testing.T) {
	srv, err := Listen("127.0.0.1:0", NewMetrics(), func() bool { return true }, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(srv.Addr(), NewMetrics(), func() bool { return true }, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "admin_addr") {
		t.Fatalf("second listen on %s: %v", srv.Addr(), err)
	}
}

func TestSnapshotEndpoint(t *testing.T) {
	srv, err := Listen("127.0.0.1:0", NewMetrics(), func() bool { return true }, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	srv.HandleSnapshot(func() (any, error) {
		calls++
		if calls == 2 {
			return nil, errors.New("disk full")
		}
		return map[string]string{"dir": "/state/snapshots/1"}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	post := func() (int, string) {
		resp, err := http.Post("http://"+srv.Addr()+"/state/snapshot", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post(); code != http.StatusOK || !strings.Contains(body, `"dir":"/state/snapshots/1"`) {
		t.Fatalf("snapshot: %d %s", code, body)
	}
	if code, body := post(); code != http.StatusInternalServerError || !strings.Contains(body, "disk full") {
		t.Fatalf("failed snapshot: %d %s", code, body)
	}
	if code, _ := get(t, "http://"+srv.Addr()+"/state/snapshot"); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET snapshot: %d", code)
	}
}
