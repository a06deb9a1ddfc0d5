package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
