package state

import (
	"context"
	"testing"
	"time"

	"github.com/kdedup/kdedup/dedup"
)

// TestLoader loads keys in several Commits, with duplicates, deletions of
// stored and unknown keys, and a Rollback, and checks what Pebble, the
// stamp, the key index and the retirement index then hold.
func TestLoader(t *testing.T) {
	ctx := context.Background()
	p := openMemPartition(t)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	l, err := p.NewLoader(0)
	if err != nil {
		t.Fatal(err)
	}
	want := map[dedup.Hash]dedup.Entry{}
	put := func(i int, expiry int64) {
		t.Helper()
		e := entryAt(base, time.Duration(expiry-base)*time.Millisecond, int64(i))
		if err := l.Put(hashOf(i), e); err != nil {
			t.Fatal(err)
		}
		want[hashOf(i)] = e
	}
	del := func(i int) {
		t.Helper()
		if err := l.Delete(hashOf(i)); err != nil {
			t.Fatal(err)
		}
		delete(want, hashOf(i))
	}
	// First chunk: keys 0-999, expiring one millisecond apart, the first
	// hundred stored twice (the second wins).
	for i := 0; i < 1000; i++ {
		put(i, base+int64(1000+i))
	}
	for i := 0; i < 100; i++ {
		put(i, base+int64(5000+i))
	}
	del(2000) // never stored: left out
	l.Mark()
	if err := l.Commit(ctx, 10, 20); err != nil {
		t.Fatal(err)
	}
	// Second chunk, while the first may be in flight: deletions of stored
	// keys, then changes a Rollback drops.
	for i := 900; i < 1000; i++ {
		del(i)
	}
	l.Mark()
	if l.Unmarked() {
		t.Fatal("Unmarked right after Mark")
	}
	if err := l.Put(hashOf(5000), entryAt(base, time.Hour, 1)); err != nil {
		t.Fatal(err)
	}
	if err := l.Delete(hashOf(0)); err != nil {
		t.Fatal(err)
	}
	if !l.Unmarked() {
		t.Fatal("Unmarked false with changes after the Mark")
	}
	l.Rollback()
	l.SetEventTime(base + 1500)
	if err := l.Commit(ctx, 30, 40); err != nil {
		t.Fatal(err)
	}
	if err := l.Wait(); err != nil {
		t.Fatal(err)
	}

	st := p.Stamp()
	if st.Input != 30 || st.Changelog != 40 || st.EventTime != base+1500 || st.Keys != int64(len(want)) || st.Ahead {
		t.Fatalf("stamp %+v, want input 30, changelog 40, event time %d, %d keys", st, base+1500, len(want))
	}
	for i := 0; i < 5001; i++ {
		e, ok, err := p.Get(hashOf(i))
		w, wok := want[hashOf(i)]
		if err != nil || ok != wok || e != w {
			t.Fatalf("Get(%d) = %+v, %v, %v; want %+v, %v", i, e, ok, err, w, wok)
		}
	}
	if err := CheckIndex(p); err != nil {
		t.Fatal(err)
	}
	if n, err := p.CountKeys(); err != nil || n != int64(len(want)) {
		t.Fatalf("CountKeys = %d, %v; want %d", n, err, len(want))
	}
	// The retirement index: at base+1500, keys 100-500 retire (expiry
	// base+1100 to base+1500; lateness 0); 0-99 were stored again to
	// expire later, 900-999 are deleted.
	b := p.NewBatch()
	b.SetEventTime(base + 1500)
	var retired []dedup.Hash
	if _, _, err := b.Retire(10_000, func(h dedup.Hash) { retired = append(retired, h) }); err != nil {
		t.Fatal(err)
	}
	if len(retired) != 401 {
		t.Fatalf("Retire at base+1500 retired %d keys, want 401 (100-500)", len(retired))
	}
	for _, h := range retired {
		if e := want[h]; e.Expiry > base+1500 {
			t.Fatalf("retired %x, expiring at %d", h, e.Expiry)
		}
	}
	b.Discard()
	// A reopened store finds what the Loader wrote, and no sstable of it
	// left behind.
	if names, err := p.store.fs.List(p.store.fs.PathJoin(p.store.dir, loadDir)); err != nil || len(names) != 0 {
		t.Fatalf("load directory holds %v, %v; want nothing", names, err)
	}
}

// TestLoaderAhead: a Commit with changes after the last Mark writes them,
// and the stamp says Ahead when told so.
func TestLoaderAhead(t *testing.T) {
	ctx := context.Background()
	p := openMemPartition(t)
	l, err := p.NewLoader(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Put(hashOf(1), entryAt(1000, time.Hour, 1)); err != nil {
		t.Fatal(err)
	}
	l.SetAhead(true)
	if err := l.Commit(ctx, 0, 7); err != nil {
		t.Fatal(err)
	}
	l.Rollback() // nothing buffered: the change is written
	if err := l.Wait(); err != nil {
		t.Fatal(err)
	}
	if st := p.Stamp(); !st.Ahead || st.Input != 0 || st.Changelog != 7 || st.Keys != 1 {
		t.Fatalf("stamp %+v, want ahead at input 0, changelog 7, 1 key", st)
	}
	if _, ok, err := p.Get(hashOf(1)); !ok || err != nil {
		t.Fatalf("Get = %v, %v: the change written ahead is gone", ok, err)
	}
}

// TestSortByHash checks the radix sort against the definition: hashes in
// order, equal hashes in arrival order, also for a bucket too large for
// insertion.
func TestSortByHash(t *testing.T) {
	var recs []loadRec
	for i := 0; i < 5000; i++ {
		h := hashOf(i * 7919 % 1000)
		switch i % 3 {
		case 0:
			h[0], h[1] = 0xab, 0xcd // one big bucket
		case 1:
			h[0], h[1] = byte(i%100), 1 // 100 buckets of about 17
		}
		recs = append(recs, loadRec{h: h, seq: uint32(i)})
	}
	sorted := sortByHash(recs, nil)
	if len(sorted) != len(recs) {
		t.Fatalf("%d records sorted, want %d", len(sorted), len(recs))
	}
	for i := 1; i < len(sorted); i++ {
		a, b := sorted[i-1], sorted[i]
		if c := compareHash(a.h, b.h); c > 0 || c == 0 && a.seq > b.seq {
			t.Fatalf("records %d and %d out of order: %x/%d, %x/%d", i-1, i, a.h, a.seq, b.h, b.seq)
		}
	}
}

func compareHash(a, b dedup.Hash) int {
	for i := range a {
		if a[i] != b[i] {
			return int(a[i]) - int(b[i])
		}
	}
	return 0
}
