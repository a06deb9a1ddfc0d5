package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tmpfs mounts a tmpfs of size bytes on a new directory and returns it;
// it skips the test where mounting is not allowed (not root, no
// CAP_SYS_ADMIN).
func tmpfs(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// avail returns the bytes available on dir's file system.
func avail(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// fill writes a file into dir that leaves about left bytes available.
func fill(t *testing.T, dir string, left int64) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for avail(t, dir) > left+int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// TestDiskFull: the state_dir's file system fills up while kdedup runs.
// It must fail closed: stop deciding before Pebble meets ENOSPC (the
// state.min_free_space floor), say so in /readyz, a metric and its log,
// stay up, and resume by itself once space returns, with exact results.
func TestDiskFull(t *testing.T) {
	e := fakeSetup(t, threeBrokers)
	const fsSize = 96 << 20
	dir := tmpfs(t, fsSize)
	admin := freeAddr(t)
	stateDir := filepath.Join(dir, "data")
	cfg := e.tp.Config(e.bs, stateDir, "a", fmt.Sprintf(`admin_addr: %s
state:
  memtable_size: 1MiB
  cache_size: 8MiB
  min_free_space: 24MiB
`, admin))
	in := start(t, cfg)
	cl := producerClient(t, e)
	const first, second = 20_000, 150_000
	w := e.tp.NewWorkload(7, first+second)
	mustProduce(t, cl, w, first)
	if got := e.verify(t, first); !got.OK() {
		t.Fatalf("before the disk filled: %v", got)
	}

	// Leave a little more than the floor, then send enough new keys that
	// kdedup's own state crosses it: it must stop deciding on its own,
	// before Pebble meets a full disk (which, before the floor existed,
	// panicked in its WAL rotation and took the process down).
	filler := fill(t, dir, 28<<20)
	prod := startProducing(context.Background(), cl, w, second, 0)
	ready := func() int {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			t.Fatalf("/readyz: %v\n%s", err, in.logs)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	deadline := time.Now().Add(time.Minute)
	for ready() != http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never 503 with %d bytes left\n%s", avail(t, dir), in.logs)
		}
		select {
		case err := <-in.done:
			t.Fatalf("kdedup exited on a full disk: %v\n%s", err, in.logs)
		case <-time.After(100 * time.Millisecond): // polling /readyz: no event to wait on
		}
	}
	prod.wait(t)
	if !strings.Contains(in.logs.String(), "state disk below min_free_space") {
		t.Errorf("no log line says the disk is full:\n%s", in.logs)
	}
	if m := metrics(t, admin); !strings.Contains(m, "kdedup_state_disk_full 1") {
		t.Errorf("kdedup_state_disk_full is not 1 while paused")
	}
	// It stays paused and up while the disk stays full.
	select {
	case err := <-in.done:
		t.Fatalf("kdedup exited on a full disk: %v\n%s", err, in.logs)
	case <-time.After(3 * time.Second): // a while paused: nothing to wait for but time
	}
	if code := ready(); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz %d while the disk is still full", code)
	}

	// Space returns: it resumes by itself, exactly once.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	rep := e.verify(t, first+second)
	if !rep.OK() {
		t.Fatalf("after the disk filled and emptied: %v\n%s", rep, in.logs)
	}
	if code := ready(); code != http.StatusOK {
		t.Errorf("/readyz %d after space returned", code)
	}
	if !strings.Contains(in.logs.String(), "state disk has room again") {
		t.Errorf("no log line says processing resumed")
	}
	in.stop(t)
	t.Logf("disk full: %v", rep)
}

// metrics returns the instance's /metrics text.
func metrics(t *testing.T, admin string) string {
	t.Helper()
	b, err := adminGet(admin, "/metrics", 0)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// adminGet returns the body of path on the instance's admin address, an
// error unless it answers 200 within timeout (0: no limit).
func adminGet(admin, path string, timeout time.Duration) ([]byte, error) {
	c := http.Client{Timeout: timeout}
	resp, err := c.Get("http://" + admin + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return b, err
}
