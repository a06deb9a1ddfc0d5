package state

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
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
// lookups that built each batch are not timed.
func BenchmarkCommit(b *testing.B) {
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
			putNew(b, bt, next)
			next++
		}
		b.StartTimer()
		if err := bt.Commit(int64(next), 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(next), "ns/key")
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
