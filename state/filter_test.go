package state

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestCuckooFilterRandom drives filters through random adds and removes
// of keys, some sharing a prefix, against a model: a stored key is never
// absent, the count is exact, and few absent keys pass. It prints the
// seed of a failure.
func TestCuckooFilterRandom(t *testing.T) {
	for seed := uint64(1); seed <= 10; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 11))
			f := newCuckooFilter(20_000)
			model := map[uint64]int{}
			var stored []uint64
			for step := 0; step < 60_000; step++ {
				if len(stored) > 0 && rng.IntN(3) == 0 {
					i := rng.IntN(len(stored))
					p := stored[i]
					if !f.remove(p) {
						t.Fatalf("seed %d step %d: remove of stored %x failed", seed, step, p)
					}
					stored[i] = stored[len(stored)-1]
					stored = stored[:len(stored)-1]
					if model[p]--; model[p] == 0 {
						delete(model, p)
					}
					continue
				}
				p := rng.Uint64()
				if len(stored) > 0 && rng.IntN(20) == 0 {
					p = stored[rng.IntN(len(stored))] // the same prefix again
				}
				if len(stored) >= 20_000 {
					continue
				}
				if !f.add(p) {
					t.Fatalf("seed %d step %d: add failed at %d keys of 20,000", seed, step, len(stored))
				}
				stored = append(stored, p)
				model[p]++
			}
			for p := range model {
				if !f.has(p) {
					t.Fatalf("seed %d: stored %x is absent", seed, p)
				}
			}
			if f.keys() != int64(len(stored)) {
				t.Fatalf("seed %d: %d keys counted, %d stored", seed, f.keys(), len(stored))
			}
			pass := 0
			for i := 0; i < 100_000; i++ {
				if f.has(rng.Uint64()) {
					pass++
				}
			}
			if pass > 100 { // expected about 12 of 100,000
				t.Fatalf("seed %d: %d of 100,000 absent keys pass the filter", seed, pass)
			}
		})
	}
}

// TestCuckooFilterFull: a filter given far more keys than it was built
// for reports it instead of losing one silently.
func TestCuckooFilterFull(t *testing.T) {
	f := newCuckooFilter(100)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 10_000; i++ {
		if !f.add(rng.Uint64()) {
			if i < 100 {
				t.Fatalf("full after %d keys, built for 100", i)
			}
			return
		}
	}
	t.Fatal("10,000 keys went into a filter of 16 buckets")
}

// TestIndexTurnsIntoFilter: a partition whose exact index outgrows the
// store's budget builds a filter in its place, which answers new keys
// without Pebble and never says absent for a stored one.
func TestIndexTurnsIntoFilter(t *testing.T) {
	// Room for a filter of 20,000 keys (8,192 buckets: 64 KiB), not for
	// their exact index (32,768 slots: 256 KiB).
	s, err := Open("db", Options{FS: vfs.NewMem(), IndexMemory: 100 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := s.OpenPartition("push-events", 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for chunk := 0; chunk < 20; chunk++ {
		b := p.NewBatch()
		for i := chunk * 1000; i < (chunk+1)*1000; i++ {
			putNewT(t, b, i)
		}
		if err := b.Commit(int64(chunk), 0); err != nil {
			t.Fatal(err)
		}
	}
	p.adoptIndex(true)
	p.NewBatch().Discard() // builds the filter, if the index went stale
	p.adoptIndex(true)
	if _, ok := p.index.(*cuckooFilter); !ok || !p.IndexReady() {
		t.Fatalf("index %T, ready %v; want a cuckoo filter", p.index, p.IndexReady())
	}
	if got := s.IndexBytes(); got > 100<<10 || got == 0 {
		t.Fatalf("%d bytes charged, budget %d", got, 100<<10)
	}
	if err := p.checkIndex(); err != nil {
		t.Fatal(err)
	}
	misses := p.IndexMisses()
	for i := 100_000; i < 101_000; i++ {
		if _, ok, err := p.Get(hashOf(i)); ok || err != nil {
			t.Fatalf("Get(%d) = %v, %v", i, ok, err)
		}
	}
	if got := p.IndexMisses() - misses; got < 990 {
		t.Fatalf("the filter answered %d of 1,000 lookups of new keys", got)
	}
}
