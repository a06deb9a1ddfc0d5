package state

// CheckIndex exposes checkIndex to the random tests of package state_test.
// It writes what the partition holds in memory to Pebble first: the check
// scans Pebble.
func CheckIndex(p *Partition) error {
	if err := p.Flush(); err != nil {
		return err
	}
	return p.checkIndex()
}

// IndexStale reports whether p's key index is stale (not consulted until
// rebuilt).
func IndexStale(p *Partition) bool { return p.stale }
