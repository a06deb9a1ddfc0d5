package state

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/kdedup/kdedup/dedup"
)

// fill commits n keys to a fresh store on disk and returns the partition.
func fill(b *testing.B, n int) (*Store, *Partition) {
	s, err := Open(b.TempDir(), Options{FS: vfs.Default})
	if err != nil {
		b.Fatal(err)
	}
	p, err := s.OpenPartition("push-events", 0, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i += 10_000 {
		bt := p.NewBatch()
		for j := i; j < min(i+10_000, n); j++ {
			putNew(b, bt, j)
		}
		if err := bt.Commit(int64(i), 0); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Compact(context.Background()); err != nil {
		b.Fatal(err)
	}
	return s, p
}

// putNew stores key i as the engine does: a lookup that misses, then Put.
func putNew(b *testing.B, bt *Batch, i int) {
	h := hashOf(i)
	if _, ok, err := bt.Get(h); err != nil || ok {
		b.Fatal("key already stored", err)
	}
	if err := bt.Put(h, entryAt(int64(i), time.Hour, int64(i))); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLookup reads keys of a 1M-key partition: hit-cold reads stored
// keys right after the store was compacted (every block read from a file),
// hit-warm the same keys again once the block cache holds them, miss
// absent keys, which the key index answers without Pebble, and
// miss-shared-prefix absent keys whose first 64 bits a stored key has
// (the index cannot tell them apart: Pebble's bloom filters answer).
func BenchmarkLookup(b *testing.B) {
	const n = 1_000_000
	s, p := fill(b, n)
	defer s.Close()
	b.Run("hit-cold", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, ok, err := p.Get(hashOf(i * 7919 % n)); err != nil || !ok {
				b.Fatal("miss", err)
			}
		}
	})
	b.Run("hit-warm", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, ok, err := p.Get(hashOf(i % 100_000)); err != nil || !ok {
				b.Fatal("miss", err)
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, ok, err := p.Get(hashOf(n + i)); err != nil || ok {
				b.Fatal("hit", err)
			}
		}
	})
	b.Run("miss-shared-prefix", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			h := hashOf(i % n)
			h[15] ^= 0xff
			if _, ok, err := p.Get(h); err != nil || ok {
				b.Fatal("hit", err)
			}
		}
	})
}

// BenchmarkOpenPartition opens a partition of 1M keys, which scans its
// keys to build the key index: warm reopens the partition (the block
// cache holds what the last scan read), cold reopens the store first.
// It reports the time per million keys and the index's memory per key
// (heap growth over the open, after a GC).
func BenchmarkOpenPartition(b *testing.B) {
	const n = 1_000_000
	s, p := fill(b, n)
	dir := s.dir
	defer func() { s.Close() }()
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for _, cold := range []bool{false, true} {
		name := "warm"
		if cold {
			name = "cold"
		}
		b.Run(name, func(b *testing.B) {
			var grew uint64
			for b.Loop() {
				b.StopTimer()
				p.Close()
				p = nil
				if cold {
					if err := s.Close(); err != nil {
						b.Fatal(err)
					}
					var err error
					if s, err = Open(dir, Options{FS: vfs.Default}); err != nil {
						b.Fatal(err)
					}
				}
				before := heap()
				b.StartTimer()
				var err error
				if p, err = s.OpenPartition("push-events", 0, time.Hour); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				grew = heap() - before
				b.StartTimer()
			}
			if got := p.index.keys(); got != n {
				b.Fatalf("the index counts %d keys", got)
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N)/(n/1e6), "ms/Mkeys")
			b.ReportMetric(float64(grew)/n, "index-B/key")
		})
	}
}

// BenchmarkCommit commits batches of 1,000 new keys with their stamp; the
// lookups that built each batch are not timed. sequential stores keys in
// key order (each flush lands beside the last: compactions only move
// files), random in the random order real key hashes have.
func BenchmarkCommit(b *testing.B) {
	for _, random := range []bool{false, true} {
		name, hash := "sequential", hashOf
		if random {
			name, hash = "random", randomHash
		}
		b.Run(name, func(b *testing.B) {
			s, err := Open(b.TempDir(), Options{FS: vfs.Default})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			p, _ := s.OpenPartition("push-events", 0, time.Hour)
			b.ReportAllocs()
			next := 0
			for b.Loop() {
				b.StopTimer()
				bt := p.NewBatch()
				for j := 0; j < 1000; j++ {
					h := hash(next)
					if _, ok, err := bt.Get(h); err != nil || ok {
						b.Fatal("key already stored", err)
					}
					if err := bt.Put(h, entryAt(int64(next), time.Hour, int64(next))); err != nil {
						b.Fatal(err)
					}
					next++
				}
				b.StartTimer()
				if err := bt.Commit(int64(next), 0); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(next), "ns/key")
		})
	}
}

// randomHash returns key i's hash: distinct for every i, in random order,
// as SHA-256 hashes are.
func randomHash(i int) dedup.Hash {
	var h dedup.Hash
	binary.LittleEndian.PutUint64(h[:8], splitmix(uint64(i)))
	binary.LittleEndian.PutUint64(h[8:], splitmix(uint64(i)^0x5851f42d4c957f2d))
	return h
}

// splitmix is SplitMix64's finaliser: a bijection that scrambles bits.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// BenchmarkWorkload decides transactions as the processor does, against a
// partition on disk: batches of 1,000 events, 3 in 4 a new key and 1 in 4
// a copy of one of the last 100,000 keys (a lookup that reads Pebble), each
// a Get and, for a key absent or expired, a Put; then Retire and
// CommitAsync. Event time advances 1 ms an event and keys live 1,000 s, so
// that after 1M events every batch retires about as many keys as it
// stores: the store stays at about 750k keys. Run it with -benchtime=Nx (N
// batches; 3000x: 3M events, the last 2M at that steady size). ns/event is
// everything up to the last checkpoint written: lookups, Puts, Retire,
// checkpoints, with the flushes and compactions they cause running on the
// machine's other core(s); read-amp is Pebble's at the end (L0 sublevels
// plus other non-empty levels).
func BenchmarkWorkload(b *testing.B) {
	s, err := Open(b.TempDir(), Options{FS: vfs.Default})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	p, err := s.OpenPartition("push-events", 0, 0)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	next, events := 0, 0
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		bt := p.NewBatch()
		for j := 0; j < 1000; j++ {
			id := next
			if next > 0 && rng.IntN(4) == 0 {
				id = next - 1 - rng.IntN(min(next, 100_000))
			} else {
				next++
			}
			h, ts := randomHash(id), int64(events)
			e, ok, err := bt.Get(h)
			if err != nil {
				b.Fatal(err)
			}
			if !ok || e.Expiry <= ts {
				if err := bt.Put(h, entryAt(ts, 1000*time.Second, ts)); err != nil {
					b.Fatal(err)
				}
			}
			events++
		}
		bt.SetEventTime(int64(events))
		if _, _, err := bt.Retire(100_000, nil); err != nil {
			b.Fatal(err)
		}
		if err := bt.CommitAsync(int64(events), 0); err != nil {
			b.Fatal(err)
		}
	}
	if err := p.Flush(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(events), "ns/event")
	b.ReportMetric(float64(s.db.Metrics().ReadAmp()), "read-amp")
	b.ReportMetric(float64(p.Stamp().Keys), "keys")
}

// BenchmarkBytesPerKey reports the disk bytes per stored key after 1M keys
// and a full compaction (entry plus retirement index), and the memory the
// open partition's key index takes per key.
func BenchmarkBytesPerKey(b *testing.B) {
	const n = 1_000_000
	for b.Loop() {
		s, p := fill(b, n)
		u := s.DiskUsage()
		b.ReportMetric(float64(u.Tables)/n, "table-bytes/key")
		b.ReportMetric(float64(u.Total)/n, "disk-bytes/key")
		b.ReportMetric(float64(p.index.bytes())/n, "index-mem-bytes/key")
		s.Close()
	}
}
