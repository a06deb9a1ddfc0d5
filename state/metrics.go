package state

import "github.com/cockroachdb/pebble/v2"

// Metrics returns Pebble's own metrics of the store (levels, compactions,
// block cache, memtables, disk space), or nil once the store is closed.
// kdedup's /metrics exports them (admin.NewPebbleCollector).
func (s *Store) Metrics() *pebble.Metrics {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return nil
	}
	return s.db.Metrics()
}
