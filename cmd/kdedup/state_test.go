package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
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
