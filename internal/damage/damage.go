// Package damage breaks a Pebble store on disk the ways kdedup's
// corrupt-state tests need: bytes flipped inside an sstable's data block,
// an sstable truncated, the MANIFEST or the marker naming it removed. The
// state package's tests (a store opened directly) and the end-to-end tests
// (a store under a running kdedup) damage stores the same way through it.
// It is for tests only.
package damage

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// Tables returns the sstables of the Pebble store in dir, largest first:
// the largest holds data blocks of every partition.
func Tables(dir string) ([]string, error) {
	ts, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		return nil, err
	}
	sizes := make(map[string]int64, len(ts))
	for _, p := range ts {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("sstables of %s: %w", dir, err)
		}
		sizes[p] = st.Size()
	}
	slices.SortFunc(ts, func(a, b string) int { return int(sizes[b] - sizes[a]) })
	return ts, nil
}

// FlipBytes inverts n bytes of path at a third of its length: inside a
// data block, whose checksum then no longer matches.
func FlipBytes(path string, n int) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	b := make([]byte, n)
	at := st.Size() / 3
	if _, err := f.ReadAt(b, at); err != nil {
		return fmt.Errorf("flipping bytes of %s: %w", path, err)
	}
	for i := range b {
		b[i] ^= 0xff
	}
	if _, err := f.WriteAt(b, at); err != nil {
		return fmt.Errorf("flipping bytes of %s: %w", path, err)
	}
	return f.Close()
}

// Truncate cuts path to half its length.
func Truncate(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	return os.Truncate(path, st.Size()/2)
}

// RemoveManifests removes the MANIFEST files of the store in dir and
// returns them.
func RemoveManifests(dir string) ([]string, error) {
	return remove(dir, "MANIFEST-*")
}

// RemoveManifestMarker removes the marker naming the store's live
// manifest (marker.manifest.*, and CURRENT where an older format has one)
// and returns what it removed.
func RemoveManifestMarker(dir string) ([]string, error) {
	ms, err := remove(dir, "marker.manifest.*")
	if err != nil {
		return ms, err
	}
	cur := filepath.Join(dir, "CURRENT")
	if err := os.Remove(cur); err == nil {
		ms = append(ms, cur)
	} else if !os.IsNotExist(err) {
		return ms, err
	}
	return ms, nil
}

// remove removes the files of dir matching pattern, at least one.
func remove(dir, pattern string) ([]string, error) {
	ms, err := filepath.Glob(filepath.Join(dir, pattern))
	if err == nil && len(ms) == 0 {
		err = fmt.Errorf("no %s in %s", pattern, dir)
	}
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if err := os.Remove(m); err != nil {
			return nil, err
		}
	}
	return ms, nil
}
