package state

import (
	"context"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// insertMoving inserts n keys over a clock that advances 1ms a key, in
// batches of 1,000, collecting after every batch when gc is set. ttl and
// lateness are in keys' worth of clock. It returns the most keys stored at
// once.
func insertMoving(t testing.TB, s *Store, n int, ttl, lateness time.Duration, gc bool) int64 {
	p, err := s.OpenPartition("push-events", 0, lateness)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var most int64
	const batch = 1000
	for i := 0; i < n; i += batch {
		b := p.NewBatch()
		for j := i; j < i+batch; j++ {
			if err := b.Put(hashOf(j), entryAt(int64(j), ttl, int64(j))); err != nil {
				t.Fatal(err)
			}
		}
		b.SetEventTime(int64(i + batch - 1))
		if err := b.Commit(int64(i+batch), 0); err != nil {
			t.Fatal(err)
		}
		most = max(most, p.Stamp().Keys)
		if gc {
			for more := true; more; {
				if _, more, err = p.Collect(10_000, nil); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return most
}

// TestCollectKeepsStateBounded inserts 1M keys over a moving event-time
// clock. With garbage collection after every batch, the stored keys never
// exceed the keys a window (ttl + lateness) holds plus one batch, and the
// disk holds what those need, not what the 1M needed.
func TestCollectKeepsStateBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("1M keys")
	}
	const n = 1_000_000
	ttl, lateness := 30*time.Second, 20*time.Second // 50,000 keys of clock
	s, err := Open(t.TempDir(), Options{FS: vfs.Default})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	most := insertMoving(t, s, n, ttl, lateness, true)
	if bound := int64(50_000 + 1000); most > bound {
		t.Fatalf("%d keys stored at once, bound %d", most, bound)
	}
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	ks, _ := s.Keyspaces()
	live := ks[TopicPartition{"push-events", 0}].Keys
	disk := s.DiskUsage()
	// A stored key takes well under 100 bytes of tables (entry and
	// retirement index; BenchmarkBytesPerKey); allow 200. The rest of the
	// disk is write-ahead logs Pebble recycles and the manifest: a few
	// memtables' worth, whatever the history.
	if bound := uint64(live) * 200; disk.Tables > bound {
		t.Fatalf("%d bytes of tables for %d live keys after %d inserted: bound %d", disk.Tables, live, n, bound)
	}
	if bound := disk.Tables + 4*16<<20 + 4<<20; disk.Total > bound {
		t.Fatalf("%d bytes on disk, %d of them tables: bound %d", disk.Total, disk.Tables, bound)
	}
	t.Logf("1M keys inserted: at most %d stored at once, %d at the end; %d bytes of tables, %d on disk", most, live, disk.Tables, disk.Total)
}
