package state

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/kdedup/kdedup/internal/damage"
)

// fillDisk commits n keys to each of parts partitions of a store in dir
// on disk, stamped input n, and compacts it: every key is in an sstable.
// Every partition's keys share the sstables (the keyspaces are adjacent).
func fillDisk(t testing.TB, dir string, opts Options, parts, n int) {
	t.Helper()
	opts.FS, opts.MemtableSize, opts.CacheSize = vfs.Default, 4<<20, 8<<20
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for pn := range parts {
		p, err := s.OpenPartition("push-events", int32(pn), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i += 10_000 {
			b := p.NewBatch()
			for j := i; j < min(i+10_000, n); j++ {
				if err := b.Put(hashOf(j), entryAt(int64(j), time.Hour, int64(j))); err != nil {
					t.Fatal(err)
				}
			}
			if err := b.Commit(int64(min(i+10_000, n)), 0); err != nil {
				t.Fatal(err)
			}
		}
		p.Close()
	}
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func diskOptions() Options {
	return Options{FS: vfs.Default, MemtableSize: 4 << 20, CacheSize: 8 << 20}
}

// largestTable returns the largest sstable in dir.
func largestTable(t testing.TB, dir string) string {
	t.Helper()
	ts, err := damage.Tables(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) == 0 {
		t.Fatalf("no sstable in %s", dir)
	}
	return ts[0]
}

// checkNoWrongAnswer reads every key fillDisk stored from every partition
// of the store in dir, if it opens: a read may fail, never answer absent.
// It returns the Open error.
func checkNoWrongAnswer(t *testing.T, dir string, parts, n int) error {
	t.Helper()
	s, err := Open(dir, diskOptions())
	if err != nil {
		return err
	}
	defer s.Close()
	for pn := range parts {
		p, err := s.OpenPartition("push-events", int32(pn), time.Hour)
		if err != nil {
			continue
		}
		if st := p.Stamp(); st.Input != 0 {
			absent := 0
			for j := range n {
				if _, ok, err := p.Get(hashOf(j)); err == nil && !ok {
					absent++
				}
			}
			if absent > 0 {
				t.Errorf("partition %d, stamped %+v, has %d of its %d keys absent", pn, st, absent, n)
			}
		}
		p.Close()
	}
	return nil
}

// TestOpenRefusesDamage: a store damaged while closed (bytes flipped in an
// sstable's data block, an sstable truncated, the manifest or the marker
// naming it deleted) is refused by Open with ErrStoreCorrupt naming what
// is damaged, without a panic; OpenOrRebuild moves it aside and opens an
// empty store.
func TestOpenRefusesDamage(t *testing.T) {
	const parts, n = 3, 100_000
	for _, kind := range []string{"flipped", "truncated", "no-manifest", "no-marker"} {
		t.Run(kind, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			fillDisk(t, dir, diskOptions(), parts, n)
			var named string
			var err error
			switch kind {
			case "flipped":
				named = largestTable(t, dir)
				err = damage.FlipBytes(named, 16)
			case "truncated":
				named = largestTable(t, dir)
				err = damage.Truncate(named)
			case "no-manifest":
				_, err = damage.RemoveManifests(dir)
				named = "MANIFEST-"
			case "no-marker":
				_, err = damage.RemoveManifestMarker(dir)
				named = "no marker naming its manifest"
			}
			if err != nil {
				t.Fatal(err)
			}
			named = filepath.Base(named)
			err = checkNoWrongAnswer(t, dir, parts, n)
			if !errors.Is(err, ErrStoreCorrupt) || !strings.Contains(err.Error(), named) {
				t.Fatalf("Open of a store %s: %v, want ErrStoreCorrupt naming %s", kind, err, named)
			}
			t.Logf("%s: %v", kind, err)

			s, quarantined, err := OpenOrRebuild(dir, diskOptions())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if !strings.HasPrefix(filepath.Base(quarantined), "state.corrupt-") {
				t.Fatalf("quarantined in %q", quarantined)
			}
			if _, err := os.Stat(filepath.Join(quarantined, "OPTIONS-000003")); err != nil && kind != "no-manifest" {
				t.Logf("quarantine holds: %v", err)
			}
			kss, err := s.Keyspaces()
			if err != nil || len(kss) != 0 {
				t.Fatalf("rebuilt store holds keyspaces %v (%v)", kss, err)
			}
		})
	}
}

// TestCorruptionWhileOpen: an sstable damaged under an open store. Reads
// that meet the damage fail, none answers absent for a stored key, nothing
// panics (Pebble's default reaction, Fatalf, would), and Corrupted says
// so, naming the file; Rebuild then gives an empty store in place.
func TestCorruptionWhileOpen(t *testing.T) {
	const parts, n = 2, 100_000
	dir := filepath.Join(t.TempDir(), "state")
	fillDisk(t, dir, diskOptions(), parts, n)
	s, err := Open(dir, diskOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	table := largestTable(t, dir)
	for i := range 8 {
		f, _ := os.OpenFile(table, os.O_RDWR, 0)
		st, _ := f.Stat()
		junk := []byte("damaged damaged damaged damaged!")
		f.WriteAt(junk, st.Size()*int64(i+1)/10)
		f.Close()
	}
	select {
	case <-s.Corrupted():
		t.Fatal("corrupted before any read")
	default:
	}
	failed := 0
	for pn := range parts {
		p, err := s.OpenPartition("push-events", int32(pn), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		for j := range n {
			_, ok, err := p.Get(hashOf(j))
			if err != nil {
				failed++
				if !IsCorrupt(err) {
					t.Fatalf("Get failed with %v, not a corruption", err)
				}
			} else if !ok {
				t.Fatalf("partition %d: stored key %d read as absent", pn, j)
			}
		}
		p.Close()
	}
	if failed == 0 {
		t.Fatal("no read met the damage")
	}
	select {
	case <-s.Corrupted():
	case <-time.After(10 * time.Second):
		t.Fatal("Corrupted not closed")
	}
	cerr := s.Corruption()
	if !errors.Is(cerr, ErrStoreCorrupt) || !strings.Contains(cerr.Error(), filepath.Base(table)) {
		t.Fatalf("Corruption() = %v, want ErrStoreCorrupt naming %s", cerr, table)
	}
	t.Logf("%d reads failed: %v", failed, cerr)

	p, err := s.OpenPartition("push-events", 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	quarantined, err := s.Rebuild(cerr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(quarantined, filepath.Base(table))); err != nil {
		t.Fatalf("quarantine %s lacks the damaged file: %v", quarantined, err)
	}
	if _, _, err := p.Get(hashOf(1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("partition opened before Rebuild: Get %v, want ErrClosed", err)
	}
	if s.Corruption() != nil {
		t.Fatalf("rebuilt store reports %v", s.Corruption())
	}
	kss, err := s.Keyspaces()
	if err != nil || len(kss) != 0 {
		t.Fatalf("rebuilt store holds %v (%v)", kss, err)
	}
	p, err = s.OpenPartition("push-events", 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if st := p.Stamp(); st.Input != 0 {
		t.Fatalf("rebuilt keyspace stamped %+v", st)
	}
	b := p.NewBatch()
	if err := b.Put(hashOf(1), entryAt(1, time.Hour, 0)); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(1, 1); err != nil {
		t.Fatal(err)
	}
}

// TestForeignStore: a store marked by one owner (group and changelog) is
// refused to another, whatever its stamps; a store without a marker
// (written before there were markers) is trusted and marked.
func TestForeignStore(t *testing.T) {
	a := Owner{Group: "a", ChangelogTopic: "a.changelog"}
	withOwner := func(o Owner) Options { opts := diskOptions(); opts.Owner = o; return opts }
	dir := filepath.Join(t.TempDir(), "state")
	fillDisk(t, dir, withOwner(a), 1, 1000)
	for _, o := range []Owner{{Group: "b", ChangelogTopic: "a.changelog"}, {Group: "a", ChangelogTopic: "b.changelog"}} {
		if _, err := Open(dir, withOwner(o)); !errors.Is(err, ErrForeign) {
			t.Fatalf("Open of a's store for %v: %v, want ErrForeign", o, err)
		}
	}
	for _, opts := range []Options{withOwner(a), diskOptions()} {
		s, err := Open(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	b := Owner{Group: "b", ChangelogTopic: "b.changelog"}
	s, quarantined, err := OpenOrRebuild(dir, withOwner(b))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(quarantined), "state.foreign-") {
		t.Fatalf("quarantined in %q", quarantined)
	}
	if kss, err := s.Keyspaces(); err != nil || len(kss) != 0 {
		t.Fatalf("rebuilt store holds %v (%v)", kss, err)
	}
	s.Close()
	if _, err := Open(dir, withOwner(a)); !errors.Is(err, ErrForeign) {
		t.Fatalf("the rebuilt store is b's: Open for a: %v", err)
	}

	// Written without an owner: trusted, and marked by the first.
	legacy := filepath.Join(t.TempDir(), "state")
	fillDisk(t, legacy, diskOptions(), 1, 1000)
	s, err = Open(legacy, withOwner(b))
	if err != nil {
		t.Fatal(err)
	}
	if kss, _ := s.Keyspaces(); kss[TopicPartition{"push-events", 0}].Input != 1000 {
		t.Fatalf("legacy store not kept: %v", kss)
	}
	s.Close()
	if _, err := Open(legacy, withOwner(a)); !errors.Is(err, ErrForeign) {
		t.Fatalf("legacy store, marked b's: Open for a: %v", err)
	}
}

func TestOwnerCodec(t *testing.T) {
	for _, o := range []Owner{{}, {Group: "g", ChangelogTopic: "g.changelog"}, {Group: strings.Repeat("x", 300)}} {
		got, err := decodeOwner(appendOwner(nil, o))
		if err != nil || got != o {
			t.Fatalf("round trip of %v: %v, %v", o, got, err)
		}
	}
	enc := appendOwner(nil, Owner{Group: "g", ChangelogTopic: "c"})
	for i := range len(enc) {
		if _, err := decodeOwner(enc[:i]); err == nil {
			t.Fatalf("truncated to %d bytes: decoded", i)
		}
	}
	if _, err := decodeOwner(append([]byte{2}, enc[1:]...)); !errors.Is(err, ErrVersion) {
		t.Fatalf("version 2: %v", err)
	}
}

// BenchmarkVerifyTables measures the checksum pass of Open
// (verifyTables) over a store of 1M keys in one partition, compacted, its
// files in the page cache:
//
//	go test ./state -run '^$' -bench BenchmarkVerifyTables -benchtime 5x
func BenchmarkVerifyTables(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "state")
	fillDisk(b, dir, diskOptions(), 1, 1_000_000)
	s, err := Open(dir, diskOptions())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	u := s.DiskUsage()
	b.ResetTimer()
	for b.Loop() {
		if err := verifyTables(context.Background(), s.db, s.fs, s.dir, s.po.MakeReaderOptions()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(u.Tables)/(1<<20), "MiB-tables")
}
