package state

// CheckIndex exposes checkIndex to the random tests of package state_test.
func CheckIndex(p *Partition) error { return p.checkIndex() }

// IndexStale reports whether p's key index is stale (not consulted until
// rebuilt).
func IndexStale(p *Partition) bool { return p.stale }
