package state

import (
	"errors"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/kdedup/kdedup/config"
	"github.com/kdedup/kdedup/dedup"
)

func openMem(t testing.TB, fs vfs.FS) *Store {
	t.Helper()
	s, err := Open("db", Options{FS: fs, MemtableSize: 4 << 20, CacheSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func hashOf(i int) dedup.Hash {
	var h dedup.Hash
	h[0], h[1], h[2], h[3] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
	h[15] = 0xab
	return h
}

func entryAt(ts int64, ttl time.Duration, off int64) dedup.Entry {
	return dedup.Entry{FirstSeen: ts, Expiry: ts + ttl.Milliseconds(), Topic: "push-events", Partition: 0, Offset: off, Fingerprint: dedup.Fingerprint{1}}
}

func TestBatchCommitAndReopen(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, fs)
	p, err := s.OpenPartition("push-events", 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if st := p.Stamp(); st.Input != 0 || st.EventTime != math.MinInt64 || st.Keys != 0 {
		t.Fatalf("new keyspace stamp %+v", st)
	}
	b := p.NewBatch()
	e := entryAt(1000, time.Hour, 7)
	if err := b.Put(hashOf(1), e); err != nil {
		t.Fatal(err)
	}
	// Reads see the batch's own writes, and nothing reaches Pebble yet.
	if got, ok, _ := b.Get(hashOf(1)); !ok || got != e {
		t.Fatalf("batch Get = %+v, %v", got, ok)
	}
	if _, ok, _ := p.Get(hashOf(1)); ok {
		t.Fatal("uncommitted Put visible in the committed state")
	}
	b.SetEventTime(1000)
	if err := b.Commit(8, 3); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(8, 3); !errors.Is(err, ErrBatchDone) {
		t.Fatalf("second Commit: %v", err)
	}
	// A discarded batch leaves nothing.
	b2 := p.NewBatch()
	_ = b2.Put(hashOf(2), e)
	b2.SetEventTime(5000)
	b2.Discard()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openMem(t, fs)
	defer s.Close()
	p, err = s.OpenPartition("push-events", 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if st := p.Stamp(); st != (Stamp{Input: 8, Changelog: 3, EventTime: 1000, Keys: 1}) {
		t.Fatalf("stamp after reopen %+v", st)
	}
	if got, ok, err := p.Get(hashOf(1)); err != nil || !ok || got != e {
		t.Fatalf("Get after reopen = %+v, %v, %v", got, ok, err)
	}
	if _, ok, _ := p.Get(hashOf(2)); ok {
		t.Fatal("discarded Put survived")
	}
}

// Two copies of a key in one batch: the engine sees the first's Put.
func TestBatchReadsOwnWrites(t *testing.T) {
	s := openMem(t, vfs.NewMem())
	defer s.Close()
	rules, err := dedup.Compile(config.Stream{Name: "push", TTL: config.Duration(time.Hour), Key: []config.KeySource{{Header: "k"}}})
	if err != nil {
		t.Fatal(err)
	}
	eng := dedup.NewEngine(rules)
	p, _ := s.OpenPartition("push-events", 0, time.Hour)
	b := p.NewBatch()
	rec := dedup.Record{Topic: "push-events", Timestamp: 5, Value: []byte("v"), Headers: []dedup.Header{{Key: "k", Value: []byte("x")}}}
	var got []dedup.Reason
	for i := 0; i < 2; i++ {
		rec.Offset = int64(i)
		d, err := eng.Decide(b, &rec)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, d.Reason)
	}
	if got[0] != dedup.FirstSeen || got[1] != dedup.Duplicate {
		t.Fatalf("decisions %v", got)
	}
	if b.Len() != 1 {
		t.Fatalf("batch holds %d keys, want 1", b.Len())
	}
}

func TestPartitionsAreIndependent(t *testing.T) {
	s := openMem(t, vfs.NewMem())
	defer s.Close()
	names := []TopicPartition{{"push-events", 0}, {"push-events", 1}, {"push-events.x", 0}, {"order-events", 0}}
	for i, tp := range names {
		p, err := s.OpenPartition(tp.Topic, tp.Partition, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		b := p.NewBatch()
		for k := 0; k < 10; k++ {
			_ = b.Put(hashOf(k), entryAt(int64(i), time.Hour, int64(k)))
		}
		if err := b.Commit(int64(10+i), 0); err != nil {
			t.Fatal(err)
		}
		if i != 1 {
			p.Close()
		}
	}
	if _, err := s.OpenPartition("push-events", 1, time.Hour); !errors.Is(err, ErrPartitionOpen) {
		t.Fatalf("second open: %v", err)
	}
	if err := s.DropPartition("push-events", 1); !errors.Is(err, ErrPartitionOpen) {
		t.Fatalf("dropping an open keyspace: %v", err)
	}
	if err := s.DropPartition("push-events", 0); err != nil {
		t.Fatal(err)
	}
	ks, err := s.Keyspaces()
	if err != nil {
		t.Fatal(err)
	}
	if len(ks) != 3 {
		t.Fatalf("keyspaces %v", ks)
	}
	for i, tp := range names {
		st, ok := ks[tp]
		if i == 0 {
			if ok {
				t.Fatal("dropped keyspace still listed")
			}
			continue
		}
		if !ok || st.Input != int64(10+i) || st.Keys != 10 {
			t.Fatalf("%v: stamp %+v, %v", tp, st, ok)
		}
		if tp.Partition == 1 {
			continue
		}
		p, err := s.OpenPartition(tp.Topic, tp.Partition, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if e, ok, err := p.Get(hashOf(3)); err != nil || !ok || e.FirstSeen != int64(i) {
			t.Fatalf("%v: %+v %v %v", tp, e, ok, err)
		}
		p.Close()
	}
	p, _ := s.OpenPartition("push-events", 0, time.Hour)
	if _, ok, _ := p.Get(hashOf(3)); ok || p.Stamp().Input != 0 {
		t.Fatal("dropped keyspace still has data")
	}
}

func TestCollect(t *testing.T) {
	s := openMem(t, vfs.NewMem())
	defer s.Close()
	lateness := 10 * time.Minute
	p, _ := s.OpenPartition("push-events", 0, lateness)
	b := p.NewBatch()
	for i := 0; i < 100; i++ { // key i first seen at i minutes, ttl 1h
		_ = b.Put(hashOf(i), entryAt(int64(i)*60_000, time.Hour, int64(i)))
	}
	b.SetEventTime(0)
	if err := b.Commit(100, 0); err != nil {
		t.Fatal(err)
	}
	// Key 5 is refreshed to expire at 3h; key 6 is replaced after expiry.
	b = p.NewBatch()
	e5, _, _ := b.Get(hashOf(5))
	e5.Expiry = 3 * 3600_000
	_ = b.Put(hashOf(5), e5)
	_, _, _ = b.Get(hashOf(6))
	_ = b.Put(hashOf(6), entryAt(75*60_000, time.Hour, 200))
	// Watermark 1h30m: keys with i*1m + 1h + 10m <= 1h30m retire: i <= 20.
	b.SetEventTime(90 * 60_000)
	if err := b.Commit(201, 0); err != nil {
		t.Fatal(err)
	}
	if k := p.Stamp().Keys; k != 100 {
		t.Fatalf("keys %d after refresh and replace, want 100", k)
	}
	var deleted []dedup.Hash
	n, more, err := p.Collect(5, func(h dedup.Hash) { deleted = append(deleted, h) })
	if err != nil || n != 5 || !more {
		t.Fatalf("first Collect = %d, %v, %v", n, more, err)
	}
	total := n
	for more {
		n, more, err = p.Collect(5, nil)
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if total != 19 { // 0..20 less the refreshed 5 and the replaced 6
		t.Fatalf("collected %d, want 19", total)
	}
	if deleted[0] != hashOf(0) {
		t.Fatalf("first deleted %x", deleted[0])
	}
	for i := 0; i < 100; i++ {
		_, ok, _ := p.Get(hashOf(i))
		if want := i > 20 || i == 5 || i == 6; ok != want {
			t.Errorf("key %d present %v, want %v", i, ok, want)
		}
	}
	if k := p.Stamp().Keys; k != 81 {
		t.Fatalf("keys %d, want 81", k)
	}
	// Nothing more to do, and the index of the refreshed key moved.
	if n, more, err := p.Collect(100, nil); n != 0 || more || err != nil {
		t.Fatalf("Collect again = %d, %v, %v", n, more, err)
	}
}

func TestSpace(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sp, err := s.Space()
	if err != nil {
		t.Fatal(err)
	}
	if sp.Size == 0 || sp.Avail > sp.Size {
		t.Errorf("space %+v: want a size, and no more available than it", sp)
	}
	if _, err := SpaceOf(filepath.Join(dir, "no-such-dir")); err == nil {
		t.Errorf("statfs of a missing directory: no error")
	}
}
