package state

import (
	"fmt"
	"syscall"
)

// Space is what the file system holding a store has room for, in bytes.
type Space struct {
	// Avail is what an unprivileged process may still write (statfs
	// f_bavail): what matters to Pebble, which does not run as root
	// necessarily.
	Avail uint64
	// Size is the file system's size.
	Size uint64
}

// Space returns the room left on the file system holding the store's
// directory. It reads statfs, a few microseconds: callers may ask before
// every transaction.
func (s *Store) Space() (Space, error) {
	return SpaceOf(s.dir)
}

// SpaceOf returns the room left on the file system holding dir.
func SpaceOf(dir string) (Space, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return Space{}, fmt.Errorf("statfs %s: %w", dir, err)
	}
	bs := uint64(st.Bsize)
	return Space{Avail: st.Bavail * bs, Size: st.Blocks * bs}, nil
}
