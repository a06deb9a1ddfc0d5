package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Snapshot layout: DIR/pebble is a Pebble checkpoint of the store (hard
// links where the file system allows, else copies), DIR/manifest.json the
// SnapshotManifest. A snapshot is a backup and a fast bootstrap: restored
// into an empty state directory, the instance catches up from the
// changelog tail its stamps name instead of the whole changelog.
const (
	snapshotPebble   = "pebble"
	snapshotManifest = "manifest.json"
	manifestVersion  = 1
)

// ErrSnapshot is wrapped by the errors of a snapshot that cannot be used.
var ErrSnapshot = errors.New("state: unusable snapshot")

// SnapshotManifest describes a snapshot: where it comes from and what each
// keyspace in it reflects.
type SnapshotManifest struct {
	Version        int                `json:"version"`
	Created        time.Time          `json:"created"`
	Group          string             `json:"group"`
	ChangelogTopic string             `json:"changelog_topic"`
	Keyspaces      []SnapshotKeyspace `json:"keyspaces"`
}

// SnapshotKeyspace is one keyspace's stamp in a snapshot.
type SnapshotKeyspace struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Stamp
}

// Snapshot writes a consistent snapshot of the store into dir, which must
// not exist: a Pebble checkpoint (every batch carries its stamp, so the
// checkpoint's stamps describe exactly its data) and a manifest of those
// stamps with group and changelogTopic. It may run while partitions are
// being written.
func (s *Store) Snapshot(dir, group, changelogTopic string) (*SnapshotManifest, error) {
	s.mu.Lock()
	db := s.db
	s.mu.Unlock()
	if db == nil {
		return nil, ErrClosed
	}
	if _, err := os.Stat(dir); err == nil {
		return nil, fmt.Errorf("snapshot into %s: %w", dir, os.ErrExist)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("snapshot into %s: %w", dir, err)
	}
	ck := filepath.Join(dir, snapshotPebble)
	if err := db.Checkpoint(ck, pebble.WithFlushedWAL()); err != nil {
		return nil, fmt.Errorf("checkpointing state into %s: %w", ck, err)
	}
	// The stamps are read from the checkpoint itself, not the live store.
	cs, err := Open(ck, Options{CacheSize: 8 << 20, MemtableSize: 4 << 20})
	if err != nil {
		return nil, err
	}
	kss, err := cs.Keyspaces()
	if cerr := cs.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	m := &SnapshotManifest{Version: manifestVersion, Created: time.Now().UTC(), Group: group, ChangelogTopic: changelogTopic}
	for tp, st := range kss {
		m.Keyspaces = append(m.Keyspaces, SnapshotKeyspace{Topic: tp.Topic, Partition: tp.Partition, Stamp: st})
	}
	sort.Slice(m.Keyspaces, func(i, j int) bool {
		a, b := m.Keyspaces[i], m.Keyspaces[j]
		return a.Topic < b.Topic || a.Topic == b.Topic && a.Partition < b.Partition
	})
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, snapshotManifest), append(b, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("writing the snapshot manifest: %w", err)
	}
	return m, nil
}

// ReadSnapshot reads and checks the manifest of the snapshot in dir.
func ReadSnapshot(dir string) (*SnapshotManifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, snapshotManifest))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	var m SnapshotManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrSnapshot, filepath.Join(dir, snapshotManifest), err)
	}
	if m.Version != manifestVersion {
		return nil, fmt.Errorf("%w: manifest version %d, want %d", ErrSnapshot, m.Version, manifestVersion)
	}
	if st, err := os.Stat(filepath.Join(dir, snapshotPebble)); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("%w: %s has no %s directory", ErrSnapshot, dir, snapshotPebble)
	}
	return &m, nil
}

// RestoreSnapshot copies the snapshot in dir into the store directory
// stateDir, which must not exist or be empty: a restore never mixes a
// snapshot with other state.
func RestoreSnapshot(dir, stateDir string) error {
	if _, err := ReadSnapshot(dir); err != nil {
		return err
	}
	if entries, err := os.ReadDir(stateDir); err == nil && len(entries) > 0 {
		return fmt.Errorf("restoring a snapshot into %s: the directory holds state already; move it away first", stateDir)
	}
	src := filepath.Join(dir, snapshotPebble)
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(stateDir, e.Name())); err != nil {
			return fmt.Errorf("restoring a snapshot into %s: %w", stateDir, err)
		}
	}
	return nil
}

// MoveSnapshot moves the snapshot in dir to to, which must not exist:
// a rename, or across file systems a copy of its files (synced) and the
// removal of dir.
func MoveSnapshot(dir, to string) error {
	if _, err := ReadSnapshot(dir); err != nil {
		return err
	}
	if _, err := os.Stat(to); err == nil {
		return fmt.Errorf("moving a snapshot to %s: %w", to, os.ErrExist)
	}
	if err := os.Rename(dir, to); err == nil {
		return nil
	}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		return copyFile(path, filepath.Join(to, rel))
	})
	if err != nil {
		return fmt.Errorf("moving a snapshot to %s: %w", to, err)
	}
	return os.RemoveAll(dir)
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
