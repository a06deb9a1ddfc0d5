package state_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kdedup/kdedup/dedup"
	"github.com/kdedup/kdedup/state"
)

func TestSnapshotRoundTrip(t *testing.T) {
	root := t.TempDir()
	s, err := state.Open(filepath.Join(root, "live"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := s.OpenPartition("push-events", 2, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b := p.NewBatch()
	var hs []dedup.Hash
	for i := 0; i < 1000; i++ {
		var h dedup.Hash
		h[0], h[1] = byte(i), byte(i>>8)
		hs = append(hs, h)
		if err := b.Put(h, dedup.Entry{FirstSeen: int64(i), Expiry: int64(i) + 3_600_000, Topic: "push-events", Partition: 2, Offset: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	b.SetEventTime(999)
	if err := b.Commit(1000, 4242); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(root, "snap")
	m, err := s.Snapshot(snap, "kdedup", "kdedup.changelog")
	if err != nil {
		t.Fatal(err)
	}
	want := state.SnapshotKeyspace{Topic: "push-events", Partition: 2, Stamp: state.Stamp{Input: 1000, Changelog: 4242, EventTime: 999, Keys: 1000}}
	if len(m.Keyspaces) != 1 || m.Keyspaces[0] != want || m.Group != "kdedup" || m.ChangelogTopic != "kdedup.changelog" {
		t.Fatalf("manifest %+v, want keyspace %+v", m, want)
	}
	if _, err := s.Snapshot(snap, "kdedup", "kdedup.changelog"); !errors.Is(err, os.ErrExist) {
		t.Fatalf("a second snapshot into the same directory: %v", err)
	}
	// Writes after the snapshot are not in it.
	b = p.NewBatch()
	if err := b.Put(dedup.Hash{15: 0xff}, dedup.Entry{Expiry: 1}); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(1001, 4243); err != nil {
		t.Fatal(err)
	}

	restored := filepath.Join(root, "restored")
	if err := state.RestoreSnapshot(snap, restored); err != nil {
		t.Fatal(err)
	}
	if err := state.RestoreSnapshot(snap, restored); err == nil {
		t.Fatal("restored into a directory that holds state")
	}
	rs, err := state.Open(restored, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	rp, err := rs.OpenPartition("push-events", 2, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := rp.Stamp(); got != want.Stamp {
		t.Fatalf("restored stamp %+v, want %+v", got, want.Stamp)
	}
	for i, h := range hs {
		if e, ok, err := rp.Get(h); err != nil || !ok || e.Offset != int64(i) {
			t.Fatalf("key %d: %+v %v %v", i, e, ok, err)
		}
	}
	if _, ok, _ := rp.Get(dedup.Hash{15: 0xff}); ok {
		t.Fatal("a write after the snapshot is in it")
	}

	if err := os.WriteFile(filepath.Join(snap, "manifest.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := state.ReadSnapshot(snap); !errors.Is(err, state.ErrSnapshot) {
		t.Fatalf("a broken manifest: %v", err)
	}
	if _, err := state.ReadSnapshot(root); !errors.Is(err, state.ErrSnapshot) {
		t.Fatalf("no snapshot at all: %v", err)
	}
}

// TestMoveSnapshot: a snapshot moves whole (here by rename: the copy path
// is for moves across file systems), and only a snapshot moves.
func TestMoveSnapshot(t *testing.T) {
	root := t.TempDir()
	s, err := state.Open(filepath.Join(root, "live"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Snapshot(filepath.Join(root, "snap"), "g", "g.changelog"); err != nil {
		t.Fatal(err)
	}
	if err := state.MoveSnapshot(filepath.Join(root, "live"), filepath.Join(root, "x")); !errors.Is(err, state.ErrSnapshot) {
		t.Fatalf("moving a store that is no snapshot: %v", err)
	}
	if err := state.MoveSnapshot(filepath.Join(root, "snap"), filepath.Join(root, "moved")); err != nil {
		t.Fatal(err)
	}
	if _, err := state.ReadSnapshot(filepath.Join(root, "moved")); err != nil {
		t.Fatalf("the moved snapshot: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "snap")); !os.IsNotExist(err) {
		t.Fatalf("the snapshot is still at its old place: %v", err)
	}
}
