package state

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"

	"github.com/kdedup/kdedup/dedup"
)

// ErrLoaderDone is returned by a Loader used after an error ended it.
var ErrLoaderDone = errors.New("state: loader ended by an earlier error")

// DefaultLoadBuffer is the buffer of a Loader made with a size of 0:
// about 1.3M changes of a typical entry. A bigger buffer means fewer,
// larger sstables (fewer levels for a lookup to pass and less compaction
// after the restore), a smaller one less memory held while restoring.
// MinLoadBuffer is the smallest buffer a Loader takes.
const (
	DefaultLoadBuffer = 64 << 20
	MinLoadBuffer     = 4 << 10
)

// loadRec is one buffered change of a Loader; its value (the encoded
// entry, none for a deletion) is in the Loader's arena.
type loadRec struct {
	h      dedup.Hash
	seq    uint32 // order of arrival: the last change of a key wins
	del    bool
	retire int64 // expiry + lateness, for the retirement index
	voff   uint32
	vlen   uint32
}

// loadRecBytes is what a buffered change takes besides its value;
// typicalEntryBytes is a typical value, an entry of the keyspace's own
// topic-partition.
const (
	loadRecBytes      = 48
	typicalEntryBytes = 36
)

// Loader writes a restore's changes to a partition in bulk: it buffers
// them, and Commit sorts them and writes them, with the new stamp, into
// one sstable that Pebble ingests. That skips what a Batch pays per key,
// the memtable's skiplist, the write-ahead log and the flush, and leaves
// Pebble a sorted file to place in its tree: the restore of a changelog
// is bound by reading it rather than by writing the state.
//
// An ingestion is atomic, and the stamp is a key of the same sstable, so
// that, as with a Batch, the state and its stamp always agree after a
// crash. Unlike a blind Batch, a Loader keeps the key index and the
// stamp's Keys exact: at Commit it looks each changed key up (the index
// answers most lookups of new keys; only a key whose 64-bit prefix is
// already stored reads Pebble) and leaves out deletions of keys that are
// not stored, which a cold restore's tombstones mostly are.
//
// Commit works on a goroutine of its own, on one buffer, while the caller
// fills the other: reading the changelog and writing the state take a
// core each. Commit waits for the previous one to end, so that one is in
// flight at a time; Wait waits for it and makes the partition's stamp,
// index and key count what it wrote. Call Wait before using the
// partition otherwise: until then its stamp is the one before the
// Commits in flight.
//
// Mark and Rollback serve the changelog's transactions: the changes since
// the last Mark are those whose commit marker has not been read yet, and
// Rollback drops them (a transaction left out) unless a Commit already
// wrote them (Stamp.Ahead says so).
//
// A Loader owns its partition while it is used: the partition's memory is
// written to Pebble when the Loader is made, and no Batch of the partition
// may be used until the restore is done. Its methods are called from one
// goroutine. After an error the Loader is ended: the partition keeps what
// earlier Commits wrote, stamped accordingly.
type Loader struct {
	p         *Partition
	limit     int      // bytes of a buffer (Full)
	cur       *loadBuf // filled by Put and Delete
	spare     *loadBuf // the other buffer, once the Commit that had it ended
	mark      int      // cur.recs before it are confirmed
	eventTime int64
	ahead     *bool
	err       error

	inFlight chan loadResult // the Commit in flight; nil if none
}

// loadBuf is one buffer of changes, and the scratch of committing it.
type loadBuf struct {
	recs           []loadRec
	arena          []byte
	tmp            []loadRec   // sortByHash's
	kept           []uint64    // bitmap by seq of the puts written
	retire         []retireRec // the retirement index to write
	key, retireKey []byte
}

// retireRec is a retirement index entry to write.
type retireRec struct {
	at int64
	h  dedup.Hash
}

// loadResult is what a Commit did, applied to the partition by Wait.
type loadResult struct {
	buf            *loadBuf
	stamp          Stamp
	added, removed []uint64 // prefixes of keys stored and deleted
	err            error
}

// NewLoader returns a Loader of the partition's state whose buffers hold
// about bufferBytes each (0: DefaultLoadBuffer; at least MinLoadBuffer).
// It writes what the partition holds in memory to Pebble first.
func (p *Partition) NewLoader(bufferBytes int) (*Loader, error) {
	if bufferBytes == 0 {
		bufferBytes = DefaultLoadBuffer
	}
	bufferBytes = max(bufferBytes, MinLoadBuffer)
	if err := p.check(); err != nil {
		return nil, err
	}
	if err := p.Flush(); err != nil {
		return nil, fmt.Errorf("loading state of %s/%d: %w", p.topic, p.partition, err)
	}
	p.adoptIndex(true)
	if p.stale && !p.noIndex {
		// A blind batch left the index stale: a Loader keeps it exact
		// from here, so it starts from a counted one.
		if _, err := p.CountKeys(); err != nil {
			return nil, err
		}
	}
	return &Loader{p: p, limit: bufferBytes, cur: &loadBuf{}, spare: &loadBuf{}, eventTime: p.stamp.EventTime}, nil
}

// Put stores e for h.
func (l *Loader) Put(h dedup.Hash, e dedup.Entry) error {
	if l.err != nil {
		return l.err
	}
	b := l.cur
	if cap(b.recs) == 0 {
		// A buffer fills up once, and is then reused: sized for a
		// typical entry, it does not grow in between.
		b.recs = make([]loadRec, 0, l.limit/(loadRecBytes+typicalEntryBytes))
		b.arena = make([]byte, 0, l.limit/(loadRecBytes+typicalEntryBytes)*typicalEntryBytes)
	}
	off := len(b.arena)
	b.arena = appendEntry(b.arena, &e, l.p.topic, l.p.partition)
	b.recs = append(b.recs, loadRec{h: h, seq: uint32(len(b.recs)), retire: addSat(e.Expiry, l.p.lateness), voff: uint32(off), vlen: uint32(len(b.arena) - off)})
	return nil
}

// Delete deletes h.
func (l *Loader) Delete(h dedup.Hash) error {
	if l.err != nil {
		return l.err
	}
	l.cur.recs = append(l.cur.recs, loadRec{h: h, seq: uint32(len(l.cur.recs)), del: true})
	return nil
}

// Mark confirms the changes buffered so far: Rollback keeps them.
func (l *Loader) Mark() { l.mark = len(l.cur.recs) }

// Rollback drops the changes buffered since the last Mark (or Commit).
// Changes a Commit already wrote ahead of their Mark stay written: only
// the stamp's Ahead flag tells of them.
func (l *Loader) Rollback() {
	b := l.cur
	for _, r := range b.recs[l.mark:] {
		if !r.del {
			b.arena = b.arena[:r.voff]
			break
		}
	}
	b.recs = b.recs[:l.mark]
}

// Unmarked reports whether changes not confirmed by a Mark are buffered.
func (l *Loader) Unmarked() bool { return len(l.cur.recs) > l.mark }

// Full reports that the Loader buffers enough for a Commit.
func (l *Loader) Full() bool {
	return len(l.cur.arena)+len(l.cur.recs)*loadRecBytes >= l.limit || len(l.cur.recs) >= math.MaxUint32
}

// Len returns the number of buffered changes.
func (l *Loader) Len() int { return len(l.cur.recs) }

// EventTime returns the watermark the next Commit writes.
func (l *Loader) EventTime() int64 { return l.eventTime }

// SetEventTime moves the watermark.
func (l *Loader) SetEventTime(ms int64) { l.eventTime = ms }

// SetAhead sets whether the stamps Commit writes are Stamp.Ahead. Without
// a call, Commit keeps the flag the stamp has.
func (l *Loader) SetAhead(ahead bool) { l.ahead = &ahead }

// Commit starts writing the buffered changes and the stamp (input: the
// next input offset; changelog: the next changelog offset) into one
// sstable that Pebble ingests, after the Commit before it has ended. It
// returns that one's error, if it failed; its own is returned by the next
// Commit or Wait.
func (l *Loader) Commit(ctx context.Context, input, changelog int64) error {
	if err := l.Wait(); err != nil {
		return err
	}
	st := l.p.stamp
	st.Input, st.Changelog = input, changelog
	st.EventTime = max(st.EventTime, l.eventTime)
	if l.ahead != nil {
		st.Ahead = *l.ahead
	}
	buf := l.cur
	l.cur, l.spare, l.mark = l.spare, nil, 0
	l.cur.recs, l.cur.arena = l.cur.recs[:0], l.cur.arena[:0]
	done := make(chan loadResult, 1)
	l.inFlight = done
	go func() { done <- l.commit(ctx, buf, st) }()
	return nil
}

// Wait waits for the Commit in flight, if any, and moves the partition's
// stamp, key index and key count to what it wrote.
func (l *Loader) Wait() error {
	if l.err != nil {
		return l.err
	}
	if l.inFlight == nil {
		return nil
	}
	res := <-l.inFlight
	l.inFlight, l.spare = nil, res.buf
	p := l.p
	if res.err != nil {
		l.err = fmt.Errorf("%w: %w", ErrLoaderDone, res.err)
		return fmt.Errorf("loading state of %s/%d: %w", p.topic, p.partition, res.err)
	}
	if p.index != nil && !p.stale {
		for _, x := range res.removed {
			if !p.index.remove(x) {
				p.stale = true // lost track: never guess (NewBatch rebuilds)
			}
		}
		for _, x := range res.added {
			if !p.stale && !p.index.add(x) {
				p.indexFull(p.index)
			}
		}
		if !p.stale {
			p.recharge()
		}
	}
	p.stamp, p.pebbleStamp = res.stamp, res.stamp
	p.gen++
	return nil
}

// commit writes buf with the stamp st, whose Keys it completes. It runs
// on a goroutine of its own: it reads the partition's index and Pebble,
// and leaves changing the partition to Wait.
func (l *Loader) commit(ctx context.Context, buf *loadBuf, st Stamp) loadResult {
	res := loadResult{buf: buf, added: make([]uint64, 0, len(buf.recs))}
	// The last change of each key wins: sorted by key, in arrival order.
	buf.tmp = sortByHash(buf.recs, buf.tmp)
	sorted := buf.tmp
	// What each last change does to the stored keys: a deletion of a key
	// not stored is left out; a put of a key not stored adds one.
	keep := sorted[:0]
	buf.kept = slices.Grow(buf.kept[:0], len(buf.recs)/64+1)[:len(buf.recs)/64+1]
	clear(buf.kept)
	for i, r := range sorted {
		if i+1 < len(sorted) && sorted[i+1].h == r.h {
			continue
		}
		stored, err := l.stored(buf, &r.h)
		if err != nil {
			res.err = err
			return res
		}
		switch {
		case r.del && !stored:
			continue
		case r.del:
			res.removed = append(res.removed, prefixOf(&r.h))
		case !stored:
			res.added = append(res.added, prefixOf(&r.h))
		}
		if !r.del {
			buf.kept[r.seq/64] |= 1 << (r.seq % 64)
		}
		keep = append(keep, r)
	}
	// The retirement index of the puts written, in time order: from the
	// changes in their order of arrival, which is about that order
	// already (pdqsort finds the runs).
	buf.retire = buf.retire[:0]
	for _, r := range buf.recs {
		if buf.kept[r.seq/64]&(1<<(r.seq%64)) != 0 {
			buf.retire = append(buf.retire, retireRec{at: r.retire, h: r.h})
		}
	}
	slices.SortFunc(buf.retire, func(a, b retireRec) int {
		if c := cmp.Compare(a.at, b.at); c != 0 {
			return c
		}
		return bytes.Compare(a.h[:], b.h[:])
	})
	st.Keys += int64(len(res.added) - len(res.removed))
	if res.err = l.ingest(ctx, buf, keep, st); res.err == nil {
		res.stamp = st
	}
	return res
}

// sortByHash returns recs sorted by hash, records of one hash in their
// order in recs, in tmp (reallocated if too small). Hashes are uniform, so
// a radix pass on their first two bytes leaves buckets of a few records,
// each sorted by insertion; a bucket too large for that (hashes aimed at
// it) is sorted by a stable sort.
func sortByHash(recs, tmp []loadRec) []loadRec {
	if cap(tmp) < len(recs) {
		tmp = make([]loadRec, len(recs))
	}
	tmp = tmp[:len(recs)]
	var start [1<<16 + 1]int
	for i := range recs {
		start[int(binary.BigEndian.Uint16(recs[i].h[:2]))+1]++
	}
	for i := 1; i < len(start); i++ {
		start[i] += start[i-1]
	}
	next := start
	for i := range recs {
		d := binary.BigEndian.Uint16(recs[i].h[:2])
		tmp[next[d]] = recs[i]
		next[d]++
	}
	for d := 0; d < 1<<16; d++ {
		bucket := tmp[start[d]:start[d+1]]
		if len(bucket) > 64 {
			slices.SortStableFunc(bucket, func(a, b loadRec) int { return bytes.Compare(a.h[:], b.h[:]) })
			continue
		}
		for i := 1; i < len(bucket); i++ {
			for j := i; j > 0 && bytes.Compare(bucket[j-1].h[:], bucket[j].h[:]) > 0; j-- {
				bucket[j-1], bucket[j] = bucket[j], bucket[j-1]
			}
		}
	}
	return tmp
}

// stored reports whether h is stored: the index answers for most keys,
// Pebble for those whose prefix it holds.
func (l *Loader) stored(buf *loadBuf, h *dedup.Hash) (bool, error) {
	if l.p.index != nil && !l.p.stale && !l.p.index.has(prefixOf(h)) {
		return false, nil
	}
	buf.key = appendEntryKey(buf.key[:0], l.p.prefix, *h)
	_, closer, err := l.p.db.Get(buf.key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, closer.Close()
}

// ingest writes recs (sorted by key, one per key), the retirement index
// and the stamp st into sstables in the store's load directory and has
// Pebble ingest them at once (atomically). Each goes into a file of its
// own, so that files do not overlap for nothing: a buffer's entries span
// the whole hash range, and overlap every other buffer's (Pebble merges
// them in compactions), but its retirement index spans the buffer's
// times, which the changelog's order mostly keeps apart from the next
// buffer's, and the stamp is one key: apart, Pebble lays most retirement
// files in its last level as they are, with nothing to compact.
func (l *Loader) ingest(ctx context.Context, buf *loadBuf, recs []loadRec, st Stamp) (err error) {
	p := l.p
	var paths []string
	defer func() {
		// Pebble moves the files it ingests into its own directory; a
		// failed write or ingestion leaves them here.
		if err != nil {
			for _, path := range paths {
				if rerr := p.store.fs.Remove(path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
					err = errors.Join(err, fmt.Errorf("removing %s: %w", path, rerr))
				}
			}
		}
	}()
	write := func(fill func(w *sstable.Writer) error) error {
		path := p.store.loadPath()
		f, err := p.store.fs.Create(path, "")
		if err != nil {
			return fmt.Errorf("creating %s: %w", path, err)
		}
		paths = append(paths, path)
		w := sstable.NewWriter(objstorageprovider.NewFileWritable(f), p.store.writerOptions())
		werr := fill(w)
		if cerr := w.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return fmt.Errorf("writing %s: %w", path, werr)
		}
		return nil
	}
	if len(recs) > 0 {
		if err := write(func(w *sstable.Writer) error {
			for _, r := range recs {
				buf.key = appendEntryKey(buf.key[:0], p.prefix, r.h)
				var err error
				if r.del {
					err = w.Delete(buf.key)
				} else {
					err = w.Set(buf.key, buf.arena[r.voff:r.voff+r.vlen])
				}
				if err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	if len(buf.retire) > 0 {
		if err := write(func(w *sstable.Writer) error {
			for _, r := range buf.retire {
				buf.retireKey = appendRetireKey(buf.retireKey[:0], p.prefix, r.at, r.h)
				if err := w.Set(buf.retireKey, nil); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	if err := write(func(w *sstable.Writer) error { return w.Set(stampKey(p.prefix), appendStamp(nil, st)) }); err != nil {
		return err
	}
	if err := p.db.Ingest(ctx, paths); err != nil {
		return fmt.Errorf("ingesting %v: %w", paths, err)
	}
	return nil
}
