package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/dedup"
	"github.com/kdedup/kdedup/state"
)

// TestStateSnapshotRestore: a snapshot of a stopped instance's state
// restores into an empty state_dir; it is refused for another group, and
// once the changelog no longer holds what followed it.
func TestStateSnapshotRestore(t *testing.T) {
	c := kfake.MustCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "push-events", "kdedup.changelog"))
	defer c.Close()
	root := t.TempDir()
	cfg := filepath.Join(root, "kdedup.yaml")
	yaml := "brokers: [" + c.ListenAddrs()[0] + "]\nstate_dir: %s\nstreams:\n  - name: push\n    input: push-events\n    ttl: 1h\n    key: [{header: Idempotency-Key}]\n"
	write := func(stateDir string) {
		if err := os.WriteFile(cfg, []byte(strings.ReplaceAll(yaml, "%s", stateDir)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// An instance's state: push-events/1 reflects changelog offsets below 5.
	live := filepath.Join(root, "live")
	s, err := state.Open(filepath.Join(live, "state"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.OpenPartition("push-events", 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b := p.NewBatch()
	if err := b.Put(dedup.Hash{1}, dedup.Entry{Expiry: 10}); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(7, 5); err != nil {
		t.Fatal(err)
	}
	s.Close()

	cmd := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := run(args, nil, &out, &errb)
		return code, out.String() + errb.String()
	}
	write(live)
	snap := filepath.Join(root, "snap")
	if code, out := cmd("state", "snapshot", "--config", cfg, "--out", snap); code != 0 || !strings.Contains(out, "push-events/1: input offset 7, changelog offset 5, 1 keys") {
		t.Fatalf("snapshot: exit %d\n%s", code, out)
	}
	if code, out := cmd("state", "snapshot", "--config", cfg); code != 2 || !strings.Contains(out, "--out DIR is required") {
		t.Fatalf("snapshot without --out: exit %d\n%s", code, out)
	}

	fresh := filepath.Join(root, "fresh")
	write(fresh)
	if code, out := cmd("state", "restore", "--config", cfg, "--from", snap, "--group", "other"); code != 1 || !strings.Contains(out, `taken for group "kdedup"`) {
		t.Fatalf("restore for another group: exit %d\n%s", code, out)
	}
	if code, out := cmd("state", "restore", "--config", cfg, "--from", snap); code != 0 {
		t.Fatalf("restore: exit %d\n%s", code, out)
	}
	rs, err := state.Open(filepath.Join(fresh, "state"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rp, err := rs.OpenPartition("push-events", 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if st := rp.Stamp(); st.Input != 7 || st.Changelog != 5 || st.Keys != 1 {
		t.Fatalf("restored stamp %+v", st)
	}
	rs.Close()

	// The changelog loses its first 10 records of partition 1: the
	// snapshot no longer connects to it.
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := 0; i < 20; i++ {
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "kdedup.changelog", Partition: 1, Key: state.SentinelKey([]byte{byte(i)})}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: "kdedup.changelog", Partition: 1, At: 10})
	if _, err := kadm.NewClient(cl).DeleteRecords(context.Background(), offs); err != nil {
		t.Fatal(err)
	}
	again := filepath.Join(root, "again")
	write(again)
	code, out := cmd("state", "restore", "--config", cfg, "--from", snap)
	if code != 1 || !strings.Contains(out, "snapshot is older than the changelog's start") || !strings.Contains(out, "starts at 10") {
		t.Fatalf("restore of a snapshot older than the changelog: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(again, "state")); err == nil {
		t.Fatal("a refused restore wrote state")
	}
}

// TestSnapshotOfRunningInstance: with the store locked by a running
// kdedup, kdedup state snapshot asks it through admin_addr and moves the
// snapshot it took to --out.
func TestSnapshotOfRunningInstance(t *testing.T) {
	c := kfake.MustCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "push-events"))
	defer c.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	root := t.TempDir()
	cfgFile := filepath.Join(root, "kdedup.yaml")
	body := "brokers: [" + c.ListenAddrs()[0] + "]\nstate_dir: " + filepath.Join(root, "data") + "\nadmin_addr: " + addr +
		"\nstreams:\n  - name: push\n    input: push-events\n    ttl: 1h\n    key: [{header: Idempotency-Key}]\n"
	if err := os.WriteFile(cfgFile, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cfg, ok := loadConfig("run", []string{"--config", cfgFile}, nil, &errb)
	if !ok {
		t.Fatal(errb.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, cfg, zerolog.Nop(), serveOptions{started: func(served) { close(started) }})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("serve ended: %v", err)
	}
	// Something to snapshot: one decided record.
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "push-events", Partition: 1, Value: []byte("{}"),
		Headers: []kgo.RecordHeader{{Key: "Idempotency-Key", Value: []byte("k")}}}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(root, "backup")
	deadline := time.Now().Add(30 * time.Second)
	for {
		var o, e bytes.Buffer
		code := run([]string{"state", "snapshot", "--config", cfgFile, "--out", out}, nil, &o, &e)
		if code != 0 {
			t.Fatalf("snapshot of a running instance: exit %d\n%s%s", code, o.String(), e.String())
		}
		m, err := state.ReadSnapshot(out)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Keyspaces) == 1 && m.Keyspaces[0].Keys == 1 {
			break // the decided record is in it
		}
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot holds the decided record: %+v", m)
		}
		if err := os.RemoveAll(out); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // polling until the record is decided and committed
	}
	// The running instance took it (under state_dir/snapshots), and it
	// was moved from there.
	entries, err := os.ReadDir(filepath.Join(root, "data", "snapshots"))
	if err != nil {
		t.Fatalf("the running instance took no snapshot: %v", err)
	}
	if len(entries) != 0 {
		t.Errorf("the snapshot was copied, not moved: %v left behind", entries)
	}
}

// TestStateProgress: kdedup state snapshot and restore show the bytes
// they copy on stderr (plain lines, as stderr is no terminal here) and
// leave their stdout as it was.
func TestStateProgress(t *testing.T) {
	root := t.TempDir()
	live, fresh := filepath.Join(root, "live"), filepath.Join(root, "fresh")
	s, err := state.Open(filepath.Join(live, "state"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.OpenPartition("push-events", 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b := p.NewBatch()
	if err := b.Put(dedup.Hash{1}, dedup.Entry{Expiry: 10}); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(7, 5); err != nil {
		t.Fatal(err)
	}
	s.Close()
	config := func(stateDir string) string {
		f := filepath.Join(root, filepath.Base(stateDir)+".yaml")
		body := "state_dir: " + stateDir + "\nstreams:\n  - name: push\n    input: push-events\n    ttl: 1h\n    key: [{header: Idempotency-Key}]\n"
		if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	cmd := func(args ...string) (string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		if code := run(args, nil, &out, &errb); code != 0 {
			t.Fatalf("kdedup %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
		}
		return out.String(), errb.String()
	}
	// The one line of a bar that ended within the plain mode's 5 s:
	// every byte counted, 100% of a total corrected to them.
	progressLine := func(stderr, label string, bytes int64) {
		t.Helper()
		re := regexp.MustCompile(`^` + regexp.QuoteMeta(label) + `: (\d+)/(\d+) \(100%\) in \d+\.\ds, \d+/s\n$`)
		m := re.FindStringSubmatch(stderr)
		if m == nil {
			t.Fatalf("stderr %q does not match %s", stderr, re)
		}
		if want := strconv.FormatInt(bytes, 10); m[1] != want || m[2] != want {
			t.Fatalf("stderr %q: want %s/%s bytes", stderr, want, want)
		}
	}

	snap := filepath.Join(root, "snap")
	stdout, stderr := cmd("state", "snapshot", "--config", config(live), "--out", snap)
	if want := "snapshot of 1 partitions written to " + snap + "\n" +
		"  push-events/1: input offset 7, changelog offset 5, 1 keys\n"; stdout != want {
		t.Errorf("snapshot's stdout\n%q, want\n%q", stdout, want)
	}
	progressLine(stderr, "kdedup state snapshot, bytes copied", dirSize(snap))

	m, err := state.ReadSnapshot(snap)
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr = cmd("state", "restore", "--config", config(fresh), "--from", snap)
	if want := "no brokers configured (embedded broker): the changelog is not checked\n" +
		"restored 1 partitions from " + snap + " (taken " + m.Created.Format(time.RFC3339) + ") into " + fresh +
		"; start kdedup to catch up from the changelog\n"; stdout != want {
		t.Errorf("restore's stdout\n%q, want\n%q", stdout, want)
	}
	progressLine(stderr, "kdedup state restore, bytes copied", dirSize(filepath.Join(snap, "pebble")))
	if got := dirSize(filepath.Join(fresh, "state")); got != dirSize(filepath.Join(snap, "pebble")) {
		t.Errorf("restored %d bytes of %d", got, dirSize(filepath.Join(snap, "pebble")))
	}
}

// TestCopyWatch: the bytes of a copy show up while it runs, and a
// failed copy's last line keeps the estimate as its total.
func TestCopyWatch(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "to")
	var out bytes.Buffer // written by the watch only in end: plain lines come every 5 s
	w := watchCopy(&out, "copy", 1000, dir)
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "a"), make([]byte, 300), 0o644); err != nil {
		t.Fatal(err)
	}
	w.end(false)
	if got := out.String(); !regexp.MustCompile(`^copy: 300/1000 \(30%\) in \d+\.\ds, \d+/s\n$`).MatchString(got) {
		t.Fatalf("output %q", got)
	}
}
