package state

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Damaged and foreign state. The state is a cache of what the changelog
// holds (Store): a store that cannot be trusted is never repaired, it is
// moved aside (Quarantine) for an operator to inspect and replaced by an
// empty one, whose keyspaces every partition then restores from the
// changelog, as on a host that never had them. A damaged sstable may hold
// the keys of several partitions, and the manifest is the whole store's:
// the unit of recovery is the store.
//
// Damage is detected
//
//   - at Open: a store whose manifest, or the marker naming it, is gone
//     (Pebble would otherwise open an empty store and replay its
//     write-ahead logs into it: a few batches with their stamps and none
//     of the keys before them, a state that looks caught up and is not);
//     Pebble's own checks (a corrupt manifest or write-ahead log, an
//     sstable missing or of the wrong size); and a pass over every block
//     of every sstable checking its checksum (verifyTables: 40 to 100 ms
//     per million keys from the page cache);
//   - while open: Pebble verifies each block's checksum when it reads it,
//     and reports a mismatch to its event listener (DataCorruption), which
//     Pebble's default would pass to the logger's Fatalf: a panic. The
//     store's listener records it instead (Corrupted, Corruption), and
//     the read fails with an error: it is never taken for an absent key.
var (
	// ErrStoreCorrupt is wrapped by the errors of a store whose files are
	// damaged. It differs from ErrCorrupt, a value (stored, or read from
	// the changelog) that does not decode.
	ErrStoreCorrupt = errors.New("state: store corrupt")
	// ErrForeign is wrapped by the error of Open for a store that another
	// group, or the same group with another changelog topic, wrote
	// (Options.Owner): its stamps are offsets of another group's
	// transactions.
	ErrForeign = errors.New("state: store of another group")
)

// IsCorrupt reports whether err says the store is damaged: ErrStoreCorrupt,
// or a Pebble error marked as corruption.
func IsCorrupt(err error) bool {
	return errors.Is(err, ErrStoreCorrupt) || pebble.IsCorruptionError(err)
}

// Owner is who a store's keyspaces belong to: their stamps are offsets of
// Group's input and of ChangelogTopic.
type Owner struct {
	Group          string
	ChangelogTopic string
}

func (o Owner) String() string {
	return fmt.Sprintf("group %q with changelog %q", o.Group, o.ChangelogTopic)
}

// The owner marker: one key outside every keyspace ('m' sorts apart from
// the keyspaces' 'p'), written when a store is first opened with an
// Owner. Layout, version 1:
//
//	version byte | group length uvarint | group | changelog length uvarint | changelog
const ownerVersion = 1

var ownerKey = []byte("m/owner")

func appendOwner(b []byte, o Owner) []byte {
	b = append(b, ownerVersion)
	b = binary.AppendUvarint(b, uint64(len(o.Group)))
	b = append(b, o.Group...)
	b = binary.AppendUvarint(b, uint64(len(o.ChangelogTopic)))
	return append(b, o.ChangelogTopic...)
}

func decodeOwner(b []byte) (Owner, error) {
	if len(b) < 1 {
		return Owner{}, fmt.Errorf("%w: empty owner marker", ErrCorrupt)
	}
	if b[0] != ownerVersion {
		return Owner{}, fmt.Errorf("%w: owner marker version %d (this build reads version %d)", ErrVersion, b[0], ownerVersion)
	}
	d := decoder{b: b[1:]}
	str := func() string {
		n := d.uvarint()
		if n > uint64(len(d.b)) {
			d.fail()
			return ""
		}
		return string(d.bytes(int(n)))
	}
	o := Owner{Group: str(), ChangelogTopic: str()}
	if d.err || len(d.b) != 0 {
		return Owner{}, fmt.Errorf("%w: owner marker of %d bytes", ErrCorrupt, len(b))
	}
	return o, nil
}

// claim checks that db belongs to want, and marks it so if it holds no
// marker yet: a new store, or one an older kdedup wrote (which did not
// mark its stores: such a store is trusted as before, and marked).
func claim(db *pebble.DB, dir string, want Owner) (adopted bool, err error) {
	v, closer, err := db.Get(ownerKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{kindKeyspace}, UpperBound: []byte{kindKeyspace + 1}})
		if err != nil {
			return false, err
		}
		adopted = it.First()
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return false, err
		}
		return adopted, db.Set(ownerKey, appendOwner(nil, want), pebble.Sync)
	case err != nil:
		return false, err
	}
	got, err := decodeOwner(v)
	closer.Close()
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			return false, fmt.Errorf("%w: %w", ErrStoreCorrupt, err)
		}
		return false, err
	}
	if got != want {
		return false, fmt.Errorf("%w: the state in %s belongs to %s, not to this configuration's %s", ErrForeign, dir, got, want)
	}
	return false, nil
}

// corruption is what the event listener of one open Pebble DB learned:
// the first corruption Pebble reported, if any.
type corruption struct {
	once sync.Once
	done chan struct{}
	err  error // set before done is closed
}

func newCorruption() *corruption { return &corruption{done: make(chan struct{})} }

func (c *corruption) report(err error) {
	c.once.Do(func() {
		c.err = err
		close(c.done)
	})
}

// listener returns the event listener of the Pebble DB the store opens:
// corruption Pebble meets is recorded in c and logged, never passed to
// the logger's Fatalf (Pebble's default, a panic).
func (s *Store) listener(c *corruption) *pebble.EventListener {
	log := s.opts.Logger
	return &pebble.EventListener{
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			log.Error().Str("component", "pebble").Str("file", info.Path).Err(info.Details).Msg("state file corrupt")
			c.report(fmt.Errorf("%w: %s: %w", ErrStoreCorrupt, info.Path, info.Details))
		},
		BackgroundError: func(err error) {
			log.Error().Str("component", "pebble").Err(err).Msg("background error")
			if pebble.IsCorruptionError(err) {
				c.report(fmt.Errorf("%w: %w", ErrStoreCorrupt, err))
			}
		},
	}
}

// Corrupted returns a channel closed once Pebble has reported damage in
// the open store's files (a block whose checksum does not match, read by
// a lookup, a scan or a compaction). The store is then not to be trusted:
// stop using it and Rebuild it. Rebuild makes a new channel.
func (s *Store) Corrupted() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.corrupt.done
}

// Corruption returns the damage Pebble reported (wrapping ErrStoreCorrupt,
// naming the file), nil if none.
func (s *Store) Corruption() error {
	s.mu.Lock()
	c := s.corrupt
	s.mu.Unlock()
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// inspect refuses, before Pebble opens it, a store directory whose
// manifest is gone: the marker (or CURRENT) naming a manifest that does
// not exist, or Pebble's files without a marker. Pebble would open the
// latter as a new store and replay its write-ahead logs into it: the
// stamps of the last batches without the keys before them.
func inspect(fs vfs.FS, dir string) error {
	ls, err := fs.List(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil // a new store
	}
	if err != nil {
		return err
	}
	desc, err := pebble.Peek(dir, fs)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrStoreCorrupt, dir, err)
	}
	if desc.Exists {
		if _, err := fs.Stat(desc.ManifestFilename); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: %s: its manifest %s is missing", ErrStoreCorrupt, dir, desc.ManifestFilename)
		}
		return nil
	}
	var orphans []string
	for _, name := range ls {
		if strings.HasSuffix(name, ".sst") || strings.HasSuffix(name, ".log") || strings.HasPrefix(name, "MANIFEST-") {
			orphans = append(orphans, name)
		}
	}
	if len(orphans) > 0 {
		return fmt.Errorf("%w: %s holds Pebble's files (%s) but no marker naming its manifest (CURRENT)", ErrStoreCorrupt, dir, strings.Join(orphans, ", "))
	}
	return nil
}

// openError classifies an error of pebble.Open: damage to the store's
// files wraps ErrStoreCorrupt. Pebble marks a corrupt manifest or
// write-ahead log as corruption; a file the manifest names that is
// missing, or whose size is not the manifest's, it does not.
func openError(dir string, err error) error {
	if pebble.IsCorruptionError(err) || errors.Is(err, os.ErrNotExist) || strings.Contains(err.Error(), "object size mismatch") {
		return fmt.Errorf("%w: opening state in %s: %w", ErrStoreCorrupt, dir, err)
	}
	return fmt.Errorf("opening state in %s: %w", dir, err)
}

// verifyTables reads every block of every live sstable of db and checks
// its checksum: damage in data no lookup has read yet is found at Open,
// before any decision, rather than mid-transaction. 40 to 100 ms per
// million keys (36 to 56 MB of sstables) from the page cache
// (BenchmarkVerifyTables), less than a partition's key index build
// (about 150 ms per million keys); from disk, the time to read them.
func verifyTables(ctx context.Context, db *pebble.DB, fs vfs.FS, dir string, ro sstable.ReaderOptions) error {
	levels, err := db.SSTables()
	if err != nil {
		return fmt.Errorf("listing sstables: %w", err)
	}
	seen := map[string]bool{}
	var errs []error
	for _, level := range levels {
		for _, t := range level {
			if t.BackingType != pebble.BackingTypeLocal {
				continue
			}
			path := fs.PathJoin(dir, t.BackingSSTNum.String()+".sst")
			if seen[path] {
				continue
			}
			seen[path] = true
			if err := verifyTable(ctx, fs, path, ro); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func verifyTable(ctx context.Context, fs vfs.FS, path string, ro sstable.ReaderOptions) error {
	f, err := fs.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		// Compacted away since listed: Pebble checked it at Open, and
		// the compaction verified every block it read.
		return nil
	}
	if err != nil {
		return fmt.Errorf("verifying %s: %w", path, err)
	}
	readable, err := sstable.NewSimpleReadable(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("verifying %s: %w", path, err)
	}
	r, err := sstable.NewReader(ctx, readable, ro)
	if err == nil {
		err = r.ValidateBlockChecksums()
		err = errors.Join(err, r.Close())
	} else {
		readable.Close()
	}
	if err != nil {
		if pebble.IsCorruptionError(err) {
			return fmt.Errorf("%w: %s: %w", ErrStoreCorrupt, path, err)
		}
		return fmt.Errorf("verifying %s: %w", path, err)
	}
	return nil
}

// Quarantine moves the store directory dir aside, to
// dir.<why>-<UTC time> next to it, and returns that path. It holds
// Pebble's lock of the directory while it does: a store some process has
// open is never moved.
func Quarantine(fs vfs.FS, dir, why string) (string, error) {
	if fs == nil {
		fs = vfs.Default
	}
	lock, err := pebble.LockDirectory(dir, fs)
	if err != nil {
		return "", fmt.Errorf("quarantining %s: %w", dir, err)
	}
	defer lock.Close()
	to := fmt.Sprintf("%s.%s-%s", dir, why, time.Now().UTC().Format("20060102T150405.000000000Z"))
	if _, err := fs.Stat(to); err == nil {
		return "", fmt.Errorf("quarantining %s: %s: %w", dir, to, os.ErrExist)
	}
	if err := fs.Rename(dir, to); err != nil {
		return "", fmt.Errorf("quarantining %s: %w", dir, err)
	}
	return to, nil
}

// quarantineReason names the quarantine directory of a store refused for
// err.
func quarantineReason(err error) string {
	if errors.Is(err, ErrForeign) {
		return "foreign"
	}
	return "corrupt"
}

// OpenOrRebuild opens the store in dir as Open does; if Open finds it
// damaged (ErrStoreCorrupt) or another group's (ErrForeign), it moves it
// aside (Quarantine), logs why and where to, and opens an empty store in
// its place: every partition is then restored from the changelog.
// quarantined is where the refused store went ("" if none).
func OpenOrRebuild(dir string, opts Options) (s *Store, quarantined string, err error) {
	s, err = Open(dir, opts)
	if err == nil || !(IsCorrupt(err) || errors.Is(err, ErrForeign)) {
		return s, "", err
	}
	fs := opts.FS
	if fs == nil {
		fs = vfs.Default
	}
	to, qerr := Quarantine(fs, dir, quarantineReason(err))
	if qerr != nil {
		return nil, "", errors.Join(err, qerr)
	}
	opts.Logger.Error().Err(err).Str("dir", dir).Str("quarantine", to).
		Msg("state quarantined: it cannot be trusted; starting from an empty state, restored from the changelog")
	s, err = Open(dir, opts)
	return s, to, err
}

// Rebuild replaces the store's database by an empty one, in place: it
// closes every open partition and the database, moves the directory
// aside (Quarantine) and opens an empty store there, with the same
// options. cause is why (Corruption, or the error that met the damage),
// logged with where the old store went. The Store stays the same value:
// what holds it (metrics, snapshots) goes on with the new database;
// partitions opened before are closed.
func (s *Store) Rebuild(cause error) (quarantined string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db != nil {
		for _, p := range s.open {
			// A checkpoint being written must end before the database
			// closes; what it writes is quarantined with the rest.
			_ = p.Flush()
			p.stopBuild()
			p.release()
			p.closed = true
			p.recount()
		}
		s.open = map[string]*Partition{}
		if err := s.db.Close(); err != nil {
			s.opts.Logger.Warn().Err(err).Str("dir", s.dir).Msg("closing the state to quarantine it")
		}
		s.db = nil
	}
	to, err := Quarantine(s.fs, s.dir, quarantineReason(cause))
	if err != nil {
		return "", err
	}
	s.opts.Logger.Error().Err(cause).Str("dir", s.dir).Str("quarantine", to).
		Msg("state quarantined: it cannot be trusted; starting from an empty state, restored from the changelog")
	if err := s.openDB(); err != nil {
		return to, err
	}
	return to, nil
}
