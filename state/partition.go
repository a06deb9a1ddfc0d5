package state

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/kdedup/kdedup/dedup"
)

// Partition is the open keyspace of one input topic-partition.
//
// It is used by one goroutine at a time (the partition's processing loop):
// reads, batches and garbage collection are not synchronised with each
// other. Its stamp in memory is the committed one; a Batch holds the
// changes of one transaction until Commit. Committed changes stay in
// memory until a checkpoint writes them to Pebble with their stamp, on a
// goroutine of its own (writeback.go): Pebble's stamp may lag the one in
// memory, never disagree with what Pebble holds.
//
// An open Partition keeps an index of its stored keys in memory (keyIndex:
// the first 64 bits of each key's hash, counted), built by one scan of the
// keyspace's entries when it is opened: about 0.15 s per million keys
// (BenchmarkOpenPartition). A lookup of a key whose prefix the index does
// not hold, which is what most lookups are (first-seen events), returns
// not-found in about 50 ns without reading Pebble (about 1 µs when Pebble
// answered it); only the others read Pebble. The index takes 8 bytes per
// slot of a table that doubles when 3/4 full and does not shrink while the
// partition is open: 10.7 to 21.3 bytes of memory per key at the most keys
// it held, 16.8 at 1M keys (BenchmarkBytesPerKey).
//
// When the store's index budget (Options.IndexMemory) has no room for
// that exact index, a cuckooFilter takes its place: 16-bit fingerprints,
// about 2.7 bytes a key, a stored key never absent, an absent one passing
// for about one lookup in 8,000 (it then reads Pebble). A filter cannot
// grow: when it fills up it is built again, twice as large, from Pebble;
// when the budget has no room for a filter either, the partition goes
// without one (keySet, newKeySet).
//
// The index is exact as a filter: it never says absent for a stored key.
// Invariant: unless stale is set, for every 64-bit prefix the index counts
// exactly the entries stored with that prefix, in Pebble or in memory
// since the last checkpoint. Every write of entries goes through
// Batch.Commit, which applies the counts of a batch that knows which keys
// existed (puts not existed: +1, dels: -1). A blind batch (restores) cannot know, so its Commit
// sets stale; a stale index is not consulted (lookups read Pebble) and is
// rebuilt by CountKeys, which restores call after their last blind batch,
// or else by the next NewBatch, each after a checkpoint (the rebuild scans
// Pebble). DropPartition needs the partition closed,
// and a snapshot is restored into an empty directory before the store is
// opened, so neither changes the entries of an open partition.
type Partition struct {
	store     *Store
	db        *pebble.DB
	topic     string
	partition int32
	prefix    []byte
	lateness  int64 // ms
	stamp     Stamp
	closed    bool
	key       []byte // scratch for point lookups

	index    keySet
	stale    bool        // the index is not exact: rebuild before use
	building *indexBuild // the index being built, nil if none; index is nil then
	// noIndex: the store's index budget left no room for this
	// partition's index: lookups read Pebble until it is reopened.
	noIndex     bool
	filterOnly  bool  // the exact index outgrew the budget: a filter from now on
	filterHint  int   // the keys a filter is sized for at least: doubled when one filled up
	indexCharge int64 // bytes charged to the store's index budget
	// gen counts Commits; a batch whose Commit finds it moved since the
	// batch began (two batches open at once, which callers must not do)
	// cannot trust its existence flags, and marks the index stale.
	gen          uint64
	indexAbsent  uint64 // lookups the index answered
	indexPresent uint64 // lookups that read Pebble

	// mem holds the committed changes not yet written to Pebble, and
	// applying those being written (a checkpoint: writeback.go), nil if
	// none; reads see mem, then applying, then Pebble. applyDone is
	// closed when the write ends, applyErr then set if it failed, and
	// pebbleStamp is what Pebble holds without it.
	mem         *memChanges
	counted     int // mem.len() as last added to store.pending (recount)
	applying    *memChanges
	applyDone   chan struct{}
	applyErr    error
	pebbleStamp Stamp
	failure     error     // of a checkpoint, until failed() reports it
	lastWrite   time.Time // of the last checkpoint
}

// Topic returns the keyspace's topic.
func (p *Partition) Topic() string { return p.topic }

// Number returns the keyspace's partition number.
func (p *Partition) Number() int32 { return p.partition }

// Stamp returns the offsets the committed state reflects.
func (p *Partition) Stamp() Stamp { return p.stamp }

// Close closes the keyspace, after its last CommitAsync has been written;
// its data stays on disk.
func (p *Partition) Close() {
	// A failed write leaves Pebble's stamp behind the lost changes, which
	// the next open reads and the runtime restores: nothing to do here.
	_ = p.Flush()
	p.stopBuild()
	p.release()
	p.store.mu.Lock()
	defer p.store.mu.Unlock()
	if !p.closed {
		p.closed = true
		p.index = nil // every use of a closed partition fails before it
		delete(p.store.open, string(p.prefix))
		p.recount()
	}
}

func (p *Partition) check() error {
	if p.closed {
		return fmt.Errorf("state for %s/%d: %w", p.topic, p.partition, ErrClosed)
	}
	return nil
}

func (p *Partition) readStamp() (Stamp, error) {
	v, closer, err := p.db.Get(stampKey(p.prefix))
	if errors.Is(err, pebble.ErrNotFound) {
		return Stamp{EventTime: math.MinInt64}, nil
	}
	if err != nil {
		return Stamp{}, fmt.Errorf("reading stamp: %w", err)
	}
	defer closer.Close()
	return decodeStamp(v)
}

// Get returns the committed entry of h, retired or not.
func (p *Partition) Get(h dedup.Hash) (dedup.Entry, bool, error) {
	if err := p.check(); err != nil {
		return dedup.Entry{}, false, err
	}
	// Committed, maybe not yet in Pebble.
	if e, ok, known := p.mem.get(h); known {
		return e, ok, nil
	}
	if e, ok, known := p.applying.get(h); known {
		return e, ok, nil
	}
	if p.indexed() && !p.index.has(prefixOf(&h)) {
		p.indexAbsent++
		return dedup.Entry{}, false, nil
	}
	p.indexPresent++
	p.key = appendEntryKey(p.key[:0], p.prefix, h)
	v, closer, err := p.db.Get(p.key)
	if errors.Is(err, pebble.ErrNotFound) {
		return dedup.Entry{}, false, nil
	}
	if err != nil {
		return dedup.Entry{}, false, fmt.Errorf("reading state of %s/%d: %w", p.topic, p.partition, err)
	}
	e, err := decodeEntry(v, p.topic, p.partition)
	closer.Close()
	if err != nil {
		return dedup.Entry{}, false, fmt.Errorf("reading state of %s/%d: key %x: %w", p.topic, p.partition, h, err)
	}
	return e, true, nil
}

// IndexMisses returns how many lookups (Get, and a Batch's reads through
// it) the in-memory key index answered as absent without reading Pebble.
// Like every method, call it from the goroutine using the partition.
func (p *Partition) IndexMisses() uint64 { return p.indexAbsent }

// IndexHits returns how many lookups read Pebble: the index held the key's
// prefix, or was being rebuilt after a restore's blind batches.
func (p *Partition) IndexHits() uint64 { return p.indexPresent }

// NewBatch starts the changes of one transaction. It implements
// dedup.State: reads see the batch's own Puts first, then the committed
// state.
func (p *Partition) NewBatch() *Batch {
	p.adoptIndex(false)
	if p.stale && !p.noIndex && !p.closed {
		// After blind batches without CountKeys, or a failed build: a
		// build begun before is of no use. The scan reads Pebble, so
		// what is in memory goes there first. If that fails, the failure
		// stays pending (Wait) and fails the batch's Retire or commit;
		// the index stays stale, and lookups read Pebble.
		p.stopBuild()
		if p.writeAll() == nil {
			if err := p.buildIndex(); err == nil {
				p.stale = false
			}
		}
	}
	return p.newBatch()
}

func (p *Partition) newBatch() *Batch {
	return &Batch{p: p, puts: map[dedup.Hash]put{}, dels: map[dedup.Hash]struct{}{}, eventTime: p.stamp.EventTime, gen: p.gen}
}

// NewBlindBatch starts a batch for a restore: its Puts and Deletes do not
// read the store to learn whether the key was there, which makes applying
// a changelog several times faster, and so it leaves the stamp's Keys as
// they were: call CountKeys when the restore is done. Reads (Get) work as
// in NewBatch.
func (p *Partition) NewBlindBatch() *Batch {
	b := p.newBatch()
	b.blind = true
	return b
}

// entryIter returns an iterator over the keyspace's entries: what Pebble
// holds at the call, whatever is written after.
func (p *Partition) entryIter() (*pebble.Iterator, error) {
	lower := append(append([]byte(nil), p.prefix...), kindEntry)
	return p.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
}

// scanIndex adds the entries of it, whose keys are the hash after skip
// bytes, to x (if not nil), closes it and returns their count. It stops early with
// errBuildStopped when stop is set, and with errIndexFull when x cannot
// take them all.
func scanIndex(it *pebble.Iterator, skip int, x keySet, stop *atomic.Bool) (int64, error) {
	var n int64
	var h dedup.Hash
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		if len(k) != skip+len(h) {
			it.Close()
			return 0, fmt.Errorf("%w: entry key %x", ErrCorrupt, k)
		}
		copy(h[:], k[skip:])
		if x != nil && !x.add(prefixOf(&h)) {
			it.Close()
			return 0, errIndexFull
		}
		n++
		if n%(1<<16) == 0 && stop != nil && stop.Load() {
			it.Close()
			return 0, errBuildStopped
		}
	}
	if err := it.Error(); err != nil {
		it.Close()
		return 0, err
	}
	if err := it.Close(); err != nil {
		return 0, err
	}
	return n, nil
}

var errIndexFull = errors.New("state: key filter full")

var errBuildStopped = errors.New("state: key index build stopped")

// indexBuild is a key index being built by a scan of Pebble on a
// goroutine of its own, so that opening a partition of many keys does not
// wait for it (about 0.15 s per million keys): until the index is
// adopted, lookups read Pebble, whose bloom filters answer most of them.
// The scan sees Pebble as it was when the build began, which held every
// stored key then (buildIndex writes memory to Pebble first); the
// partition's goroutine records the changes committed since in deltas,
// and applies them, in order, when it adopts the index (adoptIndex).
//
// done is closed when the scan ends, with index or err set; stop asks it
// to end early. deltas belong to the partition's goroutine.
type indexBuild struct {
	done   chan struct{}
	stop   atomic.Bool
	index  keySet
	err    error
	deltas []indexDelta
}

// indexDelta is a change of the stored keys since a build began.
type indexDelta struct {
	prefix uint64
	add    bool // stored; else deleted
}

// buildIndex starts building the key index from Pebble, which must hold
// every stored key (nothing in memory).
func (p *Partition) buildIndex() error {
	p.release()
	x := p.newKeySet()
	if x == nil {
		p.withoutIndex()
		return nil
	}
	it, err := p.entryIter()
	if err != nil {
		p.release()
		return err
	}
	b := &indexBuild{done: make(chan struct{}), index: x}
	skip, gate := len(p.prefix)+1, p.store.buildGate
	go func() {
		defer close(b.done)
		if gate != nil {
			<-gate // tests: builds wait (HoldIndexBuilds)
		}
		_, b.err = scanIndex(it, skip, b.index, &b.stop)
	}()
	p.index, p.building = nil, b
	return nil
}

// newKeySet returns an empty key set for the partition's keys, charged to
// the store's index budget: the exact keyIndex if the budget has room
// for it (and the partition has not outgrown it before), else a
// cuckooFilter if it has room for that; nil if neither fits. Either is
// sized for the stamp's keys and a quarter more, or for filterHint.
func (p *Partition) newKeySet() keySet {
	n := int(max(p.stamp.Keys, 0))
	n = max(n+n/4, p.filterHint)
	if !p.filterOnly {
		if size := int64(slotsFor(n)) * 8; p.store.chargeIndex(size) {
			p.indexCharge = size
			return newKeyIndex(n)
		}
	}
	// A filter cannot grow: twice the buckets its keys need, if the
	// budget has room, else what they need, else what the keys stored
	// now need, without the quarter more.
	// (never below filterHint: a filter that filled up is followed by a
	// larger one, or none).
	for _, buckets := range []int{2 * cuckooBucketsFor(n), cuckooBucketsFor(n), cuckooBucketsFor(max(int(max(p.stamp.Keys, 0)), p.filterHint))} {
		if size := int64(buckets) * 8; p.store.chargeIndex(size) {
			p.indexCharge = size
			return newCuckooBuckets(buckets)
		}
	}
	return nil
}

// adoptIndex makes the index being built the partition's, once its scan
// has ended (or, with wait, after waiting for it), with the changes
// committed since applied. A build that failed, or during which the index
// went stale, leaves the index stale: NewBatch builds it again.
func (p *Partition) adoptIndex(wait bool) {
	b := p.building
	if b == nil {
		return
	}
	if wait {
		<-b.done
	} else {
		select {
		case <-b.done:
		default:
			return
		}
	}
	p.building = nil
	if errors.Is(b.err, errIndexFull) {
		p.indexFull(b.index)
		return
	}
	if b.err != nil || p.stale {
		p.stale = true
		return
	}
	for _, d := range b.deltas {
		if d.add && !b.index.add(d.prefix) {
			p.indexFull(b.index)
			return
		}
		if !d.add && !b.index.remove(d.prefix) {
			p.stale = true // lost track: never guess
			return
		}
	}
	p.index = b.index
	p.recharge()
}

// recharge charges the store's index budget with what the index now
// takes; past the budget, the partition does without an index.
func (p *Partition) recharge() {
	if p.index == nil {
		return
	}
	n := p.index.bytes()
	switch {
	case n > p.indexCharge && !p.store.chargeIndex(n-p.indexCharge):
		// The exact index outgrew the budget: a filter, built anew
		// from Pebble by the next NewBatch, takes its place.
		p.release()
		p.index, p.stale, p.filterOnly = nil, true, true
	case n != p.indexCharge:
		if n < p.indexCharge {
			p.store.indexBytes.Add(n - p.indexCharge)
		}
		p.indexCharge = n
	}
}

// indexFull drops the filter x, which could not take another key: the
// next NewBatch builds one twice its keys from Pebble.
func (p *Partition) indexFull(x keySet) {
	p.filterHint = max(p.filterHint, 2*int(x.keys()), 1024)
	p.release()
	p.index, p.stale = nil, true
}

// release gives back what the index was charged.
func (p *Partition) release() {
	p.store.indexBytes.Add(-p.indexCharge)
	p.indexCharge = 0
}

// withoutIndex drops the index for good: the store's index budget has
// no room for it (Options.IndexMemory).
func (p *Partition) withoutIndex() {
	p.release()
	p.index, p.noIndex, p.stale = nil, true, false
}

// IndexBytes returns the memory the partition's key index takes; 0
// without one.
func (p *Partition) IndexBytes() int64 { return p.indexCharge }

// stopBuild ends the build of the index, if any, without adopting it.
func (p *Partition) stopBuild() {
	if b := p.building; b != nil {
		b.stop.Store(true)
		<-b.done
		p.building = nil
		p.stale = true
	}
}

// indexed reports whether lookups may consult the index: there is one,
// built, and exact.
func (p *Partition) indexed() bool { return p.building == nil && !p.stale && !p.noIndex }

// IndexReady reports whether the key index answers lookups (it is built
// and exact), adopting a build that has ended. Until then lookups read
// Pebble.
func (p *Partition) IndexReady() bool {
	p.adoptIndex(false)
	return p.indexed()
}

// CountKeys counts the stored keys (one pass over the keyspace's entries)
// and writes the count into the stamp: after restores with blind batches.
// The same pass rebuilds the key index, which blind batches leave stale.
func (p *Partition) CountKeys() (int64, error) {
	if err := p.Flush(); err != nil {
		return 0, err
	}
	if err := p.check(); err != nil {
		return 0, err
	}
	p.stopBuild()
	p.release()
	var (
		x   keySet
		n   int64
		err error
	)
	for {
		if !p.noIndex {
			if x = p.newKeySet(); x == nil {
				p.withoutIndex()
			}
		}
		var it *pebble.Iterator
		if it, err = p.entryIter(); err == nil {
			n, err = scanIndex(it, len(p.prefix)+1, x, nil)
		}
		if errors.Is(err, errIndexFull) {
			// The filter filled up: again, with a larger one (or none,
			// if the budget has no room for it).
			p.indexFull(x)
			continue
		}
		if err != nil || x == nil {
			break
		}
		p.index, p.stale = x, false
		if p.recharge(); !p.stale {
			break
		}
		// The exact index outgrew the budget (the stamp's Keys, which
		// sized it, were behind): again, as a filter for the keys
		// counted.
		p.filterHint = max(p.filterHint, int(n))
	}
	if err != nil {
		return 0, fmt.Errorf("counting keys of %s/%d: %w", p.topic, p.partition, err)
	}
	if x == nil {
		p.stale = false // no index: nothing to rebuild
	}
	st := p.stamp
	st.Keys = n
	if err := p.db.Set(stampKey(p.prefix), appendStamp(nil, st), pebble.NoSync); err != nil {
		return 0, fmt.Errorf("counting keys of %s/%d: %w", p.topic, p.partition, err)
	}
	p.stamp, p.pebbleStamp = st, st
	return n, nil
}

type put struct {
	e       dedup.Entry
	existed bool // the key was stored before the batch
}

// Batch collects a transaction's key changes in memory. Nothing reaches
// Pebble before Commit, so a transaction that aborts leaves no trace:
// Discard, or just drop the batch.
type Batch struct {
	p         *Partition
	puts      map[dedup.Hash]put
	dels      map[dedup.Hash]struct{} // committed keys the batch deletes
	reindex   [][]byte                // retirement index keys to write (Retire)
	retiredTo []byte                  // the last retirement index key Retire read, nil if none
	retired   bool                    // Retire ran
	popped    []poppedItem            // what Retire took from the heaps in memory: back on Discard
	reindexAt []retireItem            // reindex as heap items (writeback.go)
	blind     bool                    // NewBlindBatch: no reads on Put and Delete, Keys not kept
	gen       uint64                  // the partition's gen when the batch began
	eventTime int64
	lastGet   dedup.Hash // the key of the last Get that read the partition
	lastHit   bool       // ... whether it was stored
	lastSet   bool       // ... and whether there was one
	done      bool
	ahead     *bool // SetAhead; nil: the stamp's flag stays
}

var _ dedup.State = (*Batch)(nil)

// Get returns h's entry as the batch sees it.
func (b *Batch) Get(h dedup.Hash) (dedup.Entry, bool, error) {
	if b.done {
		return dedup.Entry{}, false, ErrBatchDone
	}
	if pu, ok := b.puts[h]; ok {
		return pu.e, true, nil
	}
	if _, ok := b.dels[h]; ok {
		return dedup.Entry{}, false, nil
	}
	e, ok, err := b.p.Get(h)
	b.lastGet, b.lastHit, b.lastSet = h, ok, err == nil
	return e, ok, err
}

// Put stores e for h in the batch.
func (b *Batch) Put(h dedup.Hash, e dedup.Entry) error {
	if b.done {
		return ErrBatchDone
	}
	pu, ok := b.puts[h]
	if _, del := b.dels[h]; !ok && del {
		// Deleted, then stored again: a replacement of the committed key.
		delete(b.dels, h)
		pu.existed, ok = true, true
	}
	if !ok && b.blind {
		pu.existed, ok = true, true // unknown: Keys is recounted after the restore
	}
	if !ok {
		if b.lastSet && b.lastGet == h {
			pu.existed = b.lastHit
		} else {
			_, found, err := b.p.Get(h)
			if err != nil {
				return err
			}
			pu.existed = found
		}
	}
	pu.e = e
	b.puts[h] = pu
	return nil
}

// Delete removes h in the batch: a changelog tombstone being restored.
func (b *Batch) Delete(h dedup.Hash) error {
	if b.done {
		return ErrBatchDone
	}
	if pu, ok := b.puts[h]; ok {
		delete(b.puts, h)
		if pu.existed {
			b.dels[h] = struct{}{}
		}
		return nil
	}
	if b.blind {
		b.dels[h] = struct{}{}
		return nil
	}
	_, found, err := b.p.Get(h)
	if err != nil {
		return err
	}
	if found {
		b.dels[h] = struct{}{}
	}
	return nil
}

// Retire deletes, in the batch, up to limit keys retired as of the
// batch's watermark (expiry + lateness at or below it) and calls fn with
// each, so that the caller can write their changelog tombstones in the
// same transaction. Like Collect it reads the retirement index from its
// start: O(retired keys). Keys the batch itself stores are left alone.
// more reports that retired keys remain. Call it after the batch's last
// Put of the transaction; Retire again on the same batch finds nothing new.
func (b *Batch) Retire(limit int, fn func(dedup.Hash)) (n int, more bool, err error) {
	if b.done {
		return 0, false, ErrBatchDone
	}
	p := b.p
	if err := p.check(); err != nil {
		return 0, false, err
	}
	if err := p.failed(); err != nil {
		return 0, false, err
	}
	wm := b.eventTime
	if wm == math.MinInt64 || b.retired {
		return 0, false, nil
	}
	b.retired = true
	// First the keys committed since the last checkpoint, and those of
	// the checkpoint being written, which are not in Pebble's retirement
	// index yet; then that index, from where the last Retire since the
	// checkpoints stopped. A checkpoint being written is not waited for
	// (a transaction's retirement would stand still for the whole write):
	// Pebble's index is read as it is, before the write lands or after.
	seen, n, err := b.retireMem(limit, fn)
	if err != nil || seen == limit {
		return n, seen == limit, err
	}
	k, more, err := b.retirePebble(limit-seen, fn)
	if err != nil {
		return 0, false, err
	}
	return n + k, more, nil
}

// retirePebble is the second part of Retire: up to limit entries of
// Pebble's retirement index, from where the last Retire since the
// checkpoints stopped, each retired in the batch if its entry, as the
// batch sees it, still retires as of the watermark.
func (b *Batch) retirePebble(limit int, fn func(dedup.Hash)) (n int, more bool, err error) {
	p, wm := b.p, b.eventTime
	lower := append(append([]byte(nil), p.prefix...), kindRetire)
	for _, m := range []*memChanges{p.applying, p.mem} {
		if m != nil && m.retiredTo != nil && bytes.Compare(m.retiredTo, lower) >= 0 {
			lower = append(append([]byte(nil), m.retiredTo...), 0)
		}
	}
	var h dedup.Hash
	upper := appendRetireKey(nil, p.prefix, wm, h)
	upper = prefixEnd(upper[:len(upper)-len(h)])
	if bytes.Compare(lower, upper) >= 0 {
		return 0, false, nil
	}
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return 0, false, fmt.Errorf("retiring keys of %s/%d: %w", p.topic, p.partition, err)
	}
	defer it.Close()
	seen := 0
	for valid := it.First(); valid; valid = it.Next() {
		if seen == limit {
			more = true
			break
		}
		seen++
		key := it.Key()
		copy(h[:], key[len(key)-len(h):])
		b.retiredTo = append(b.retiredTo[:0], key...)
		if _, ok := b.puts[h]; ok {
			continue // stored again by this batch, which indexes it anew
		}
		if _, ok := b.dels[h]; ok {
			continue // indexed twice, deleted once
		}
		e, ok, err := p.Get(h)
		if err != nil {
			return 0, false, err
		}
		if !ok {
			continue // deleted since this index entry was written
		}
		if retire := addSat(e.Expiry, p.lateness); retire > wm {
			// Replaced or refreshed since this index entry was written,
			// or lateness grew: index it where it now retires.
			b.reindex = append(b.reindex, appendRetireKey(nil, p.prefix, retire, h))
			b.reindexAt = append(b.reindexAt, retireItem{at: retire, h: h})
			continue
		}
		b.dels[h] = struct{}{}
		n++
		if fn != nil {
			fn(h)
		}
	}
	if err := it.Error(); err != nil {
		return 0, false, fmt.Errorf("retiring keys of %s/%d: %w", p.topic, p.partition, err)
	}
	return n, more, nil
}

// EventTime returns the partition's watermark as of the batch.
func (b *Batch) EventTime() int64 { return b.eventTime }

// SetEventTime moves the watermark.
func (b *Batch) SetEventTime(ms int64) { b.eventTime = ms }

// Len returns the number of keys the batch changes (stores or deletes).
func (b *Batch) Len() int { return len(b.puts) + len(b.dels) }

// Each calls fn for every key the batch changes, in no particular order.
func (b *Batch) Each(fn func(h dedup.Hash, e dedup.Entry)) {
	for h, pu := range b.puts {
		fn(h, pu.e)
	}
}

// Discard drops the batch's changes, and puts back what its Retire took
// from the partition's retirement heaps.
func (b *Batch) Discard() {
	if b.done {
		return
	}
	b.done = true
	for _, pi := range b.popped {
		pi.from.push(pi.it)
	}
	b.popped = nil
}

// SetAhead sets whether the stamp Commit writes is Stamp.Ahead: the
// keyspace then holds changes of transactions beyond the stamp's input.
// Without a call, Commit keeps the flag the stamp has.
func (b *Batch) SetAhead(ahead bool) { b.ahead = &ahead }

// Commit writes the batch's changes and the new stamp (input: the next
// input offset; changelog: the next changelog offset) in one atomic Pebble
// batch, without waiting for fsync (see Store).
func (b *Batch) Commit(input, changelog int64) error {
	if err := b.CommitAsync(input, changelog); err != nil {
		return err
	}
	return b.p.Flush()
}

// CommitAsync commits the batch as Commit does, but leaves it in memory:
// the partition's stamp and key index move at once, and its reads see the
// batch's changes, which reach Pebble with the next checkpoint
// (writeback.go), on a goroutine of its own, while the caller goes on.
// It returns the error of an earlier checkpoint that failed.
//
// A crash before the checkpoint loses the changes since the last one, as
// a crash loses any write not yet flushed: Pebble's stamp then says what
// it holds, and the runtime restores the gap.
func (b *Batch) CommitAsync(input, changelog int64) error {
	if b.done {
		return ErrBatchDone
	}
	b.done = true
	p := b.p
	if err := p.check(); err != nil {
		return err
	}
	if err := p.failed(); err != nil {
		return err
	}
	st := p.stamp
	st.Input, st.Changelog = input, changelog
	st.EventTime = max(st.EventTime, b.eventTime)
	if b.ahead != nil {
		st.Ahead = *b.ahead
	}
	if !b.blind {
		st.Keys -= int64(len(b.dels))
	}
	for _, pu := range b.puts {
		if !pu.existed {
			st.Keys++
		}
	}
	p.stamp = st
	p.updateIndex(b)
	p.mem.merge(b, p)
	p.recount()
	return p.Tick()
}

// recount brings the store's count of changes held in memory
// (Options.PendingChanges) up to date with p.mem.
func (p *Partition) recount() {
	n := p.mem.len()
	if p.closed {
		n = 0
	}
	if d := n - p.counted; d != 0 {
		p.store.pending.Add(int64(d))
		p.counted = n
	}
}

// updateIndex applies a committed batch's changes of stored keys to the
// key index, or marks it stale when the batch cannot say exactly what they
// are (see Partition).
func (p *Partition) updateIndex(b *Batch) {
	gen := p.gen
	p.gen++
	if p.stale || p.noIndex || len(b.puts)+len(b.dels) == 0 {
		return
	}
	if b.blind || b.gen != gen {
		p.stale = true
		return
	}
	if bl := p.building; bl != nil {
		// Applied when the index being built is adopted.
		for h := range b.dels {
			bl.deltas = append(bl.deltas, indexDelta{prefix: prefixOf(&h)})
		}
		for h, pu := range b.puts {
			if !pu.existed {
				bl.deltas = append(bl.deltas, indexDelta{prefix: prefixOf(&h), add: true})
			}
		}
		return
	}
	for h := range b.dels {
		if !p.index.remove(prefixOf(&h)) {
			p.stale = true // lost track: never guess
			return
		}
	}
	for h, pu := range b.puts {
		if !pu.existed && !p.index.add(prefixOf(&h)) {
			p.indexFull(p.index)
			return
		}
	}
	p.recharge()
}

// Collect deletes up to limit retired keys: those whose expiry + lateness
// is at or below the committed watermark. It reads the retirement index
// from its start, so its cost is O(retired keys), never a scan of live
// ones. deleted, if not nil, is called with each deleted key. more reports
// that retired keys remain (limit was reached). It is Retire in a batch of
// its own, committed with the stamp's offsets unchanged: local garbage
// collection, for state whose deletions need no changelog tombstones.
//
// Collecting changes no decision (retired keys decide as absent), so it
// may run between any two batches; never while a Batch of the partition is
// open, whose Puts were checked against the keys stored before.
func (p *Partition) Collect(limit int, deleted func(dedup.Hash)) (n int, more bool, err error) {
	if err := p.check(); err != nil {
		return 0, false, err
	}
	b := p.NewBatch()
	n, more, err = b.Retire(limit, deleted)
	if err != nil {
		b.Discard()
		return 0, false, err
	}
	if b.retiredTo == nil && len(b.reindex) == 0 && len(b.dels) == 0 {
		b.Discard()
		return 0, false, nil
	}
	st := p.stamp
	if err := b.Commit(st.Input, st.Changelog); err != nil {
		return 0, false, fmt.Errorf("collecting state of %s/%d: %w", p.topic, p.partition, err)
	}
	return n, more, nil
}
