package state

// CheckIndex exposes checkIndex to the random tests of package state_test.
// It writes what the partition holds in memory to Pebble first: the check
// scans Pebble.
func CheckIndex(p *Partition) error {
	if err := p.Flush(); err != nil {
		return err
	}
	p.adoptIndex(true)
	return p.checkIndex()
}

// HoldIndexBuilds makes the key index builds of s started from now on
// wait, before they scan, until release is called.
func HoldIndexBuilds(s *Store) (release func()) {
	gate := make(chan struct{})
	s.buildGate = gate
	return func() { close(gate); s.buildGate = nil }
}

// IndexStale reports whether p's key index is stale (not consulted until
// rebuilt).
func IndexStale(p *Partition) bool { return p.stale }

// IndexLess reports whether p does without a key index (its store's
// Options.IndexMemory had no room for it).
func IndexLess(p *Partition) bool { return p.noIndex }

// IndexFiltered reports whether p's key index is a cuckoo filter.
func IndexFiltered(p *Partition) bool {
	_, ok := p.index.(*cuckooFilter)
	return ok
}
