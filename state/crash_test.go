package state

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/kdedup/kdedup/dedup"
)

// crashBatch commits batch i (1, 2, ...) of the crash tests: it stores
// keys (i, 0..perBatch) and deletes those of batch i-3, with stamp input i.
// After batch k the keyspace holds batches k-2 to k, and nothing else.
func crashBatch(t *testing.T, p *Partition, i int) {
	t.Helper()
	b := p.NewBatch()
	for j := 0; j < crashPerBatch; j++ {
		h := crashKey(i, j)
		if _, ok, err := b.Get(h); err != nil || ok {
			t.Fatalf("batch %d: key %d stored already (%v)", i, j, err)
		}
		if err := b.Put(h, entryAt(int64(i), time.Hour, int64(i*crashPerBatch+j))); err != nil {
			t.Fatal(err)
		}
		if i > 3 {
			if err := b.Delete(crashKey(i-3, j)); err != nil {
				t.Fatal(err)
			}
		}
	}
	b.SetEventTime(int64(i))
	if err := b.Commit(int64(i), int64(i)); err != nil {
		t.Fatal(err)
	}
}

const crashPerBatch = 100

func crashKey(i, j int) dedup.Hash {
	return randomHash(i*crashPerBatch + j)
}

// checkCrashState checks that p holds exactly batches k-2..k of crashBatch
// for the k its stamp names, up to batches: a prefix, as its stamp says.
func checkCrashState(p *Partition, batches int) error {
	st := p.Stamp()
	k := int(st.Input)
	if k < 0 || k > batches || st.Changelog != int64(k) {
		return fmt.Errorf("stamp %+v after %d batches", st, batches)
	}
	held := 0
	for i := 1; i <= batches; i++ {
		for j := 0; j < crashPerBatch; j++ {
			e, ok, err := p.Get(crashKey(i, j))
			if err != nil {
				return err
			}
			if want := i <= k && i > k-3; ok != want {
				return fmt.Errorf("stamp input %d: key %d of batch %d stored: %v", k, j, i, ok)
			}
			if ok && e.Offset != int64(i*crashPerBatch+j) {
				return fmt.Errorf("key %d of batch %d: entry %+v", j, i, e)
			}
			if ok {
				held++
			}
		}
	}
	if st.Keys != int64(held) {
		return fmt.Errorf("stamp counts %d keys, %d stored", st.Keys, held)
	}
	return p.checkIndex()
}

// TestCloseKeepsState: without a write-ahead log, Close must flush the
// memtables; the state is then on "disk" (synced: a crash right after the
// Close loses nothing).
func TestCloseKeepsState(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s := openMem(t, fs)
	p, err := s.OpenPartition("push-events", 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := 1; i <= n; i++ {
		crashBatch(t, p, i)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openMem(t, fs.CrashClone(vfs.CrashCloneCfg{}))
	defer s.Close()
	if p, err = s.OpenPartition("push-events", 0, time.Hour); err != nil {
		t.Fatal(err)
	}
	if p.Stamp().Input != n {
		t.Fatalf("stamp %+v after a clean close, want input %d", p.Stamp(), n)
	}
	if err := checkCrashState(p, n); err != nil {
		t.Fatal(err)
	}
}

// TestCrashKeepsPrefix simulates crashes (a copy of the file system with
// only what was synced, and some of what was not) at many points of a run
// of batches that fills and flushes several memtables, and checks that
// each reopened store holds a prefix of the batches that agrees with its
// stamp, and that across the crashes some lost batches and some kept
// flushed ones.
func TestCrashKeepsPrefix(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s, err := Open("db", Options{FS: fs, MemtableSize: 1 << 20, CacheSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.OpenPartition("push-events", 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	type crash struct {
		fs      *vfs.MemFS
		batches int
	}
	var crashes []crash
	const batches = 400
	for i := 1; i <= batches; i++ {
		crashBatch(t, p, i)
		if i%9 == 0 {
			cfg := vfs.CrashCloneCfg{}
			if pct := rng.IntN(3) * 50; pct > 0 {
				cfg = vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rand.New(rand.NewPCG(uint64(i), 3))}
			}
			crashes = append(crashes, crash{fs.CrashClone(cfg), i})
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var lost, kept int
	for _, c := range crashes {
		cs, err := Open("db", Options{FS: c.fs, MemtableSize: 1 << 20, CacheSize: 1 << 20})
		if err != nil {
			t.Fatalf("reopening after a crash at batch %d: %v", c.batches, err)
		}
		cp, err := cs.OpenPartition("push-events", 0, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkCrashState(cp, c.batches); err != nil {
			t.Fatalf("crash at batch %d: %v", c.batches, err)
		}
		k := int(cp.Stamp().Input)
		if k < c.batches {
			lost++
		}
		if k > 0 {
			kept++
		}
		// The recovered store goes on from its stamp.
		crashBatch(t, cp, k+1)
		if err := checkCrashState(cp, k+1); err != nil {
			t.Fatalf("crash at batch %d, then batch %d: %v", c.batches, k+1, err)
		}
		if err := cs.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if lost == 0 || kept == 0 {
		t.Fatalf("of %d crashes, %d lost batches and %d kept some: the test does not exercise a partial recovery", len(crashes), lost, kept)
	}
	t.Logf("%d crashes: %d lost unflushed batches, %d kept flushed ones", len(crashes), lost, kept)
}
