package consumer

type rebalanceEvent struct {
	assigned bool
	parts    map[string][]int32
}

// rebalanced runs in the group's goroutine: it only queues the event for
// the processing loop, which owns the partitions.
func (p *Processor) rebalanced(assigned bool, m map[string][]int32) {
	if assigned {
		p.joined.Store(true)
	}
	if len(m) == 0 {
		return
	}
	p.events.Lock()
	p.pending = append(p.pending, rebalanceEvent{assigned, m})
	p.events.Unlock()
}

// applyRebalances applies queued assignments and revocations: a revoked
// partition's batch is dropped (its transaction aborts) and its keyspace
// closed; an assigned one is checked before its next record.
func (p *Processor) applyRebalances() {
	p.events.Lock()
	evs := p.pending
	p.pending = nil
	p.events.Unlock()
	for _, ev := range evs {
		for topic, ps := range ev.parts {
			for _, n := range ps {
				key := tp{topic, n}
				if ev.assigned {
					p.log.Info().Str("topic", topic).Int32("partition", n).Msg("partition assigned")
					p.assigned[key] = true
					if st, ok := p.parts[key]; ok {
						st.check = true
					}
					continue
				}
				p.log.Info().Str("topic", topic).Int32("partition", n).Msg("partition revoked")
				delete(p.assigned, key)
				if st, ok := p.parts[key]; ok {
					if st.batch != nil {
						st.batch.Discard()
					}
					st.part.Close()
					delete(p.parts, key)
				}
			}
		}
	}
}

// gone reports whether key was revoked or lost since the last
// applyRebalances: a restore, which runs in the processing goroutine while
// the group's goroutine goes on, checks it to give the partition up at
// once. Either its revocation is queued, or the session's client no longer
// knows its committed offset: a GroupTransactSession passes on only the
// first revocation before the next End, but its client drops a revoked
// partition's entry whatever the callback.
func (p *Processor) gone(key tp) bool {
	if c := p.cl; c != nil {
		if _, known := p.committed(c, key); !known {
			return true
		}
	}
	return p.revokedPending(key)
}

// revokedPending reports whether a revocation (or loss) of key is queued
// but not yet applied.
func (p *Processor) revokedPending(key tp) bool {
	p.events.Lock()
	defer p.events.Unlock()
	for _, ev := range p.pending {
		if ev.assigned {
			continue
		}
		for _, n := range ev.parts[key.topic] {
			if n == key.partition {
				return true
			}
		}
	}
	return false
}
