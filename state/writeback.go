package state

import (
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/kdedup/kdedup/dedup"
)

// A Partition writes its committed changes back to Pebble in checkpoints
// rather than one Pebble batch per transaction. Each committed Batch is
// merged into mem, which reads see before Pebble; a checkpoint writes
// mem, with the stamp it reflects, in one atomic Pebble batch on a
// goroutine of its own (at most one at a time: applying is the mem being
// written). Most keys of a deduplicating stream live a short while: a key
// stored and retired between two checkpoints never reaches Pebble at all,
// neither its entry nor its retirement index entry nor their deletion,
// which is most of what the per-transaction writes cost (the writes, the
// memtable flushes and the compactions of keys already gone).
//
// It is safe for the same reason as writing without fsync (see Store):
// Pebble's stamp always describes exactly what Pebble holds, so a crash
// that loses mem and an unfinished checkpoint leaves a stamp behind the
// committed offsets, and the runtime restores the gap from the
// changelog, as after any other crash.
//
// A checkpoint is due once mem holds checkpointChanges changes or
// checkpointEvery has passed since the last one, so that the memory held
// and the changelog replayed after a crash stay bounded.
const (
	checkpointChanges = 100_000
	checkpointEvery   = 10 * time.Second
	// checkpointLimit bounds the changes held while a checkpoint is
	// still being written: past it, the next commit waits for that write.
	checkpointLimit = 4 * checkpointChanges
)

// memChanges are committed changes of a partition not yet in Pebble.
type memChanges struct {
	puts map[dedup.Hash]memPut
	// dels are deletions of keys that may be stored in Pebble.
	dels map[dedup.Hash]struct{}
	// retiredTo is the last retirement index key a Retire read from
	// Pebble: the checkpoint deletes the index up to it, and the next
	// Retire reads on from there.
	retiredTo []byte
	// reindex are retirement index keys to write (Batch.Retire).
	reindex [][]byte
	// retire orders the puts by retirement time, for Retire: those keys
	// are not in Pebble's retirement index yet.
	retire retireHeap
	// stamp is the stamp the checkpoint writes with the changes.
	stamp Stamp
}

// memPut is a stored entry not yet in Pebble; fresh if Pebble holds no
// entry of its key, so that deleting it leaves nothing to delete there.
type memPut struct {
	e     dedup.Entry
	fresh bool
}

func newMemChanges() *memChanges {
	return &memChanges{puts: map[dedup.Hash]memPut{}, dels: map[dedup.Hash]struct{}{}}
}

func (m *memChanges) len() int {
	if m == nil {
		return 0
	}
	return len(m.puts) + len(m.dels)
}

// get returns what m says of h: known false if m holds no change of it.
func (m *memChanges) get(h dedup.Hash) (e dedup.Entry, ok, known bool) {
	if m == nil {
		return dedup.Entry{}, false, false
	}
	if pu, found := m.puts[h]; found {
		return pu.e, true, true
	}
	if _, found := m.dels[h]; found {
		return dedup.Entry{}, false, true
	}
	return dedup.Entry{}, false, false
}

// merge adds the changes of committed batch b of p.
func (m *memChanges) merge(b *Batch, p *Partition) {
	if b.retiredTo != nil {
		m.retiredTo = append(m.retiredTo[:0], b.retiredTo...)
	}
	m.reindex = append(m.reindex, b.reindex...)
	for _, it := range b.reindexAt {
		// Like a put's: a later scan of Pebble's index may pass the
		// entry's position before the checkpoint writes it.
		m.retire.push(it)
	}
	for h := range b.dels {
		if pu, ok := m.puts[h]; ok {
			delete(m.puts, h)
			if pu.fresh {
				continue // stored and deleted in memory: Pebble never saw it
			}
		}
		m.dels[h] = struct{}{}
	}
	for h, pu := range b.puts {
		mp := memPut{e: pu.e}
		switch old, ok := m.puts[h]; {
		case ok:
			mp.fresh = old.fresh
		default:
			if _, del := m.dels[h]; del {
				delete(m.dels, h)
			} else {
				// A key that did not exist is in neither mem nor Pebble;
				// a blind batch's says it existed (it cannot know).
				mp.fresh = !pu.existed
			}
		}
		m.puts[h] = mp
		m.retire.push(retireItem{at: addSat(pu.e.Expiry, p.lateness), h: h})
	}
}

// retireMem is the first part of Batch.Retire: it deletes, in the batch,
// the keys committed since the last checkpoint that are retired as of the
// batch's watermark, up to limit, and returns how many index entries it
// read and how many keys it deleted. An item it pops belongs to an entry
// that may since have been replaced or deleted: the entry decides, as in
// Pebble's index. The batch keeps what it popped, and Discard puts it
// back (poppedItem). The checkpoint being written, if any, comes first:
// its keys are older.
func (b *Batch) retireMem(limit int, fn func(dedup.Hash)) (seen, n int, err error) {
	p, wm := b.p, b.eventTime
	for _, m := range []*memChanges{p.applying, p.mem} {
		if m == nil {
			continue
		}
		var k int
		k, seen, err = b.retireHeap(&m.retire, wm, limit, seen, fn)
		n += k
		if err != nil || seen == limit {
			return seen, n, err
		}
	}
	return seen, n, nil
}

// retireHeap pops the items of hp retired as of wm into the batch's
// deletions, while seen stays below limit (retireMem). The heap of a
// checkpoint being written is its own: the write reads its puts, dels
// and index keys, never the heap.
func (b *Batch) retireHeap(hp *retireHeap, wm int64, limit, seen int, fn func(dedup.Hash)) (n, seenAfter int, err error) {
	p := b.p
	for len(*hp) > 0 && (*hp)[0].at <= wm {
		if seen == limit {
			return n, seen, nil
		}
		seen++
		it := hp.pop()
		b.popped = append(b.popped, poppedItem{hp, it})
		h := it.h
		if _, ok := b.puts[h]; ok {
			continue
		}
		if _, ok := b.dels[h]; ok {
			continue
		}
		e, ok, err := p.Get(h)
		if err != nil {
			return n, seen, err
		}
		if !ok || addSat(e.Expiry, p.lateness) > wm {
			continue
		}
		b.dels[h] = struct{}{}
		n++
		if fn != nil {
			fn(h)
		}
	}
	return n, seen, nil
}

// checkpointDue reports whether mem should be written now: it is large,
// or Pebble's stamp is behind and the last checkpoint is old.
func (p *Partition) checkpointDue() bool {
	if n := p.mem.len(); n >= checkpointChanges || n > 0 && p.overPending(1) {
		return true
	}
	return p.stamp != p.pebbleStamp && time.Since(p.lastWrite) >= checkpointEvery
}

// overPending reports whether the open partitions together hold more
// than times Options.PendingChanges changes in memory.
func (p *Partition) overPending(times int64) bool {
	bound := p.store.opts.PendingChanges
	return bound > 0 && p.store.pending.Load() >= times*bound
}

// checkpoint starts writing mem, with the current stamp, to Pebble on a
// goroutine of its own, after the previous checkpoint finished; mem
// starts empty. It returns the previous checkpoint's error.
func (p *Partition) checkpoint() error {
	if err := p.Wait(); err != nil {
		return err
	}
	m := p.mem
	m.stamp = p.stamp
	p.mem = newMemChanges()
	p.recount()
	p.applying = m
	p.lastWrite = time.Now()
	done := make(chan struct{})
	p.applyDone = done
	go func() {
		if w := p.store.writing; w != nil {
			w <- struct{}{}
			defer func() { <-w }()
		}
		p.applyErr = p.write(m)
		close(done)
	}()
	return nil
}

// Tick writes the changes held in memory once they are due
// (checkpointDue), and ends a checkpoint whose write is done, without
// waiting for one that is not (up to checkpointLimit): CommitAsync calls
// it, and so should the user of a partition that stopped receiving
// commits, now and then, between batches, or its changes would stay in
// memory. It returns the error of a checkpoint that failed.
func (p *Partition) Tick() error {
	if p.closed {
		return nil
	}
	if err := p.failed(); err != nil {
		return err
	}
	if p.applyDone != nil {
		select {
		case <-p.applyDone:
			if p.Wait() != nil {
				return p.failed()
			}
		default:
			// The previous checkpoint is still being written: the next
			// waits for it only once memory holds checkpointLimit
			// changes (or the open partitions together twice
			// Options.PendingChanges), so that a slow write does not
			// stall the caller (a transaction's commit) for as long as
			// memory allows.
			if p.mem.len() < checkpointLimit && !p.overPending(2) {
				return nil
			}
		}
	}
	if p.checkpointDue() {
		return p.checkpoint()
	}
	return nil
}

// Flush writes mem to Pebble and waits until it is there. It takes the
// error of a checkpoint that failed (see failed).
func (p *Partition) Flush() error {
	if p.writeAll() != nil {
		return p.failed()
	}
	return nil
}

// writeAll writes mem to Pebble and waits until it is there, leaving the
// error of a checkpoint that failed pending (failed).
func (p *Partition) writeAll() error {
	if p.failure != nil {
		return p.failure
	}
	if p.mem.len() > 0 || p.mem.retiredTo != nil || len(p.mem.reindex) > 0 || p.stamp != p.pebbleStamp {
		if err := p.checkpoint(); err != nil {
			return err
		}
	}
	return p.Wait()
}

// Wait waits until the checkpoint being written, if any, is in Pebble. If
// writing it failed, the partition's stamp goes back to what Pebble holds,
// mem is dropped and the key index rebuilt before its next use, and the
// error is returned: the state then lags the committed offsets, which the
// runtime restores.
func (p *Partition) Wait() error {
	if p.applyDone == nil {
		return nil
	}
	<-p.applyDone
	err := p.applyErr
	st := p.applying.stamp
	p.applyDone, p.applying, p.applyErr = nil, nil, nil
	if err != nil {
		// Back to what Pebble holds, at once: nothing may read the
		// changes that did not land. The failure stays pending until a
		// caller that acts on it takes it (failed): a batch begun on the
		// state as it now is must not commit as if nothing happened.
		p.stamp = p.pebbleStamp
		p.mem = newMemChanges()
		p.recount()
		p.stale = true
		p.failure = fmt.Errorf("writing the state of %s/%d: %w", p.topic, p.partition, err)
		return p.failure
	}
	p.pebbleStamp = st
	return nil
}

// failed takes the error of a checkpoint that failed, nil if none. Wait
// put the partition back to what Pebble holds (its stamp, no changes in
// memory, the index rebuilt before its next use); the callers that take
// the error make the transaction fail (Retire, before the transaction
// commits; CommitAsync, whose caller then checks the partition against
// its committed offset; Tick and Flush likewise), so that nothing decided
// on the state as it was before the failure commits, and the partition
// is restored.
func (p *Partition) failed() error {
	err := p.failure
	p.failure = nil
	return err
}

// write writes m and its stamp in one atomic Pebble batch, without
// waiting for fsync (see Store).
func (p *Partition) write(m *memChanges) error {
	wb := p.db.NewBatch()
	defer wb.Close()
	var k, v []byte
	// First the retirement index entries Retire read, in one range
	// tombstone: the writes below come later in the batch, so the range
	// does not cover them.
	if m.retiredTo != nil {
		lower := append(append([]byte(nil), p.prefix...), kindRetire)
		upper := append(append([]byte(nil), m.retiredTo...), 0)
		if err := wb.DeleteRange(lower, upper, nil); err != nil {
			return err
		}
	}
	for h := range m.dels {
		k = appendEntryKey(k[:0], p.prefix, h)
		if err := wb.Delete(k, nil); err != nil {
			return err
		}
	}
	for _, rk := range m.reindex {
		if err := wb.Set(rk, nil, nil); err != nil {
			return err
		}
	}
	for h, pu := range m.puts {
		k = appendEntryKey(k[:0], p.prefix, h)
		v = appendEntry(v[:0], &pu.e, p.topic, p.partition)
		if err := wb.Set(k, v, nil); err != nil {
			return err
		}
		k = appendRetireKey(k[:0], p.prefix, addSat(pu.e.Expiry, p.lateness), h)
		if err := wb.Set(k, nil, nil); err != nil {
			return err
		}
	}
	if err := wb.Set(stampKey(p.prefix), appendStamp(nil, m.stamp), nil); err != nil {
		return err
	}
	return p.db.Apply(wb, pebble.NoSync)
}

// poppedItem is an item a batch's Retire took from a heap: Discard puts
// it back, so that an aborted transaction's retirements are not lost (a
// later Retire may move past the key's position in Pebble's index before
// the checkpoint writes it, and the checkpoint after that would delete
// the index entry: the key would never be collected).
type poppedItem struct {
	from *retireHeap
	it   retireItem
}

// retireItem is a key stored since the last checkpoint and when it
// retires (expiry + lateness).
type retireItem struct {
	at int64
	h  dedup.Hash
}

// retireHeap is a binary min-heap of retireItems by at. Not
// container/heap: its interface boxes every item pushed and popped, an
// allocation per stored key.
type retireHeap []retireItem

func (r *retireHeap) push(x retireItem) {
	*r = append(*r, x)
	h := *r
	for i := len(h) - 1; i > 0; {
		parent := (i - 1) / 2
		if h[parent].at <= h[i].at {
			break
		}
		h[parent], h[i] = h[i], h[parent]
		i = parent
	}
}

func (r *retireHeap) pop() retireItem {
	h := *r
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	for i := 0; ; {
		min, l, rt := i, 2*i+1, 2*i+2
		if l < len(h) && h[l].at < h[min].at {
			min = l
		}
		if rt < len(h) && h[rt].at < h[min].at {
			min = rt
		}
		if min == i {
			break
		}
		h[i], h[min] = h[min], h[i]
		i = min
	}
	*r = h
	return top
}
