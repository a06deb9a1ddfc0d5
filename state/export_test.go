package state

// CheckIndex exposes checkIndex to the random tests of package state_test.
// It waits for a CommitAsync in flight first: the check scans Pebble.
func CheckIndex(p *Partition) error {
	if err := p.Wait(); err != nil {
		return err
	}
	return p.checkIndex()
}

// IndexStale reports whether p's key index is stale (not consulted until
// rebuilt).
func IndexStale(p *Partition) bool { return p.stale }
