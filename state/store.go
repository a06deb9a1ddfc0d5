package state

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rs/zerolog"

	"github.com/kdedup/kdedup/dedup"
)

// Errors of the package.
var (
	ErrPartitionOpen = errors.New("state: partition keyspace already open")
	ErrClosed        = errors.New("state: closed")
	ErrBatchDone     = errors.New("state: batch already committed or discarded")
)

// Options configure a Store. The zero value is usable after EnsureDefaults.
type Options struct {
	// CacheSize is the Pebble block cache, shared by every partition.
	// Pebble takes the memtables' memory out of it (MemtableSize).
	// Default: 64 MiB. A bigger cache is what helped most in
	// BenchmarkWorkload (3M events, ~750k live keys): 256 MiB took about
	// 30% less time per event than 64 MiB, as lookups of stored keys and
	// Retire read fewer blocks from files.
	CacheSize int64
	// MemtableSize is the size of one memtable; up to two are held before
	// writes stall on a flush. Pebble reserves each memtable's size in the
	// block cache, so keep CacheSize several times larger: with the 64 MiB
	// cache, 64 MiB memtables took 1.6x the time and CPU per event of
	// 16 MiB ones in BenchmarkWorkload (the cache left no room for blocks),
	// and with a 256 MiB cache no better than 16 MiB. Default: 16 MiB.
	//
	// Pebble's L0 thresholds stay at its defaults (compaction at 4 files,
	// write stalls at 12): CockroachDB's 2 and 1000 did not measurably
	// help this workload and cost ~10% more CPU in compactions.
	MemtableSize uint64
	// BloomBitsPerKey sizes the bloom filters of every level, L0 included.
	// Most lookups are for new keys, which a filter answers without reading
	// a data block. Default: 10 (about 1% false positives).
	BloomBitsPerKey int
	// IndexMemory bounds the memory of the key indexes of every open
	// partition together (about 17 bytes a key: see Partition). A
	// partition whose index would take it past the bound does without
	// one until it is opened again: its lookups of new keys read Pebble,
	// whose bloom filters answer them in about a microsecond instead of
	// 50 ns. Throughput then degrades with the keys held, and memory does
	// not grow with them. Default: 0, no bound.
	IndexMemory int64
	// PendingChanges bounds the committed changes all open partitions
	// together hold in memory before writing them to Pebble (the
	// write-back of writeback.go; about 130 bytes each, with their
	// retirement heap entries): past it, a partition writes what it holds
	// at its next commit or Tick, however few its own. Each partition
	// also writes once it holds checkpointChanges (100,000). Default: 0,
	// no bound but that one, per partition.
	PendingChanges int64
	// FS is the file system. Default: the operating system's; tests use
	// vfs.NewMem().
	FS vfs.FS
	// Logger receives Pebble's own messages. Default: discards them.
	Logger zerolog.Logger
	// Owner, if its Group is set, is who the store's keyspaces must
	// belong to: Open refuses a store another owner marked (ErrForeign),
	// and marks one that has no owner yet (corrupt.go).
	Owner Owner
}

// EnsureDefaults fills in the defaults of unset fields.
func (o *Options) EnsureDefaults() {
	if o.CacheSize == 0 {
		o.CacheSize = 64 << 20
	}
	if o.MemtableSize == 0 {
		o.MemtableSize = 16 << 20
	}
	if o.BloomBitsPerKey == 0 {
		o.BloomBitsPerKey = 10
	}
	if o.FS == nil {
		o.FS = vfs.Default
	}
}

// Validate reports every problem of the options at once.
func (o *Options) Validate() error {
	var errs []error
	if o.IndexMemory < 0 {
		errs = append(errs, fmt.Errorf("state: index memory %d is negative", o.IndexMemory))
	}
	if o.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("state: cache size %d is negative", o.CacheSize))
	}
	if o.MemtableSize < 1<<20 || o.MemtableSize >= 4<<30 {
		errs = append(errs, fmt.Errorf("state: memtable size %d outside [1MiB, 4GiB)", o.MemtableSize))
	}
	if o.BloomBitsPerKey < 1 || o.BloomBitsPerKey > 64 {
		errs = append(errs, fmt.Errorf("state: bloom bits per key %d outside [1, 64]", o.BloomBitsPerKey))
	}
	return errors.Join(errs...)
}

// Store is the Pebble database of one instance: one keyspace per input
// topic-partition, each holding its keys, an index of their retirement
// times and its offset stamp.
//
// Writes never wait for fsync. That is safe because every batch carries the
// stamp of the offsets it reflects: after a crash (of the process or of the
// machine) Pebble recovers a prefix of the applied batches, so the state
// and its stamp still agree, and the runtime rebuilds what lies between the
// stamp and the broker's committed offsets. Durability is the broker's job;
// Pebble is a cache that knows exactly what it holds (TestCrashKeepsPrefix
// simulates crashes and checks that the state recovered is a prefix that
// agrees with its stamp).
//
// Pebble's write-ahead log stays on, although nothing syncs it. Without it
// (DisableWAL) Pebble would recover only its flushed memtables, still a
// prefix of the batches, but a crash of the process alone, not only of the
// machine, would then lose up to two memtables of checkpoints for the
// changelog to restore; and it did not measurably pay: the same time and
// CPU per event in BenchmarkWorkload, a commit path where the log write
// is under 1% of the CPU profile.
//
// A Store is safe for concurrent use; each Partition is used by one
// goroutine at a time.
type Store struct {
	db   *pebble.DB
	po   *pebble.Options
	dir  string
	fs   vfs.FS
	opts Options       // as opened with, to open again (Rebuild)
	load atomic.Uint64 // names the Loader's sstables
	// corrupt is what Pebble reported of damage to db's files (corrupt.go).
	corrupt *corruption

	mu   sync.Mutex
	open map[string]*Partition // by keyspace prefix
	// pending counts the changes the open partitions hold in mem
	// (Partition.recount), for Options.PendingChanges.
	pending atomic.Int64
	// writing admits one partition's checkpoint write at a time: several
	// partitions reach checkpointChanges together, and their writes at
	// once (each a large Pebble batch, then a memtable flush) would take
	// every core from the decisions and the brokers for a while.
	writing chan struct{}
	// buildGate, if not nil, holds key index builds until closed: a test
	// hook (HoldIndexBuilds), to commit while a build runs.
	buildGate chan struct{}
	// indexBudget is Options.IndexMemory (0: none); indexBytes is what
	// the open partitions' indexes are charged (Partition.recharge).
	indexBudget int64
	indexBytes  atomic.Int64
}

// chargeIndex charges n more bytes of key index to the budget, and
// reports false, charging nothing, when that would pass it.
func (s *Store) chargeIndex(n int64) bool {
	for {
		cur := s.indexBytes.Load()
		if s.indexBudget > 0 && cur+n > s.indexBudget {
			return false
		}
		if s.indexBytes.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

// IndexBytes returns the memory the key indexes of the open partitions
// take together.
func (s *Store) IndexBytes() int64 { return s.indexBytes.Load() }

// Open opens (creating if needed) the store in dir. A store whose files
// are damaged is refused with an error wrapping ErrStoreCorrupt, one that
// another owner marked (Options.Owner) with ErrForeign (corrupt.go; see
// OpenOrRebuild).
func Open(dir string, opts Options) (*Store, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	s := &Store{dir: dir, fs: opts.FS, opts: opts, indexBudget: opts.IndexMemory, open: map[string]*Partition{}, writing: make(chan struct{}, 1)}
	if err := s.openDB(); err != nil {
		return nil, err
	}
	return s, nil
}

// openDB opens the Pebble database of s.dir, checks it (inspect,
// verifyTables, claim) and makes it the store's.
func (s *Store) openDB() error {
	opts, dir := s.opts, s.dir
	if err := inspect(opts.FS, dir); err != nil {
		return err
	}
	corrupt := newCorruption()
	po := &pebble.Options{
		FS:                 opts.FS,
		CacheSize:          opts.CacheSize,
		MemTableSize:       opts.MemtableSize,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             pebbleLogger{opts.Logger},
		EventListener:      s.listener(corrupt),
	}
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(opts.BloomBitsPerKey)
	}
	// As Pebble completes its own copy: the Loader's sstables are written
	// with these options (writerOptions).
	po.EnsureDefaults()
	db, err := pebble.Open(dir, po)
	if err != nil {
		return openError(dir, err)
	}
	if err := verifyTables(context.Background(), db, opts.FS, dir, po.MakeReaderOptions()); err != nil {
		db.Close()
		return fmt.Errorf("opening state in %s: %w", dir, err)
	}
	if opts.Owner.Group != "" {
		adopted, err := claim(db, dir, opts.Owner)
		if err != nil {
			db.Close()
			if IsCorrupt(err) || errors.Is(err, ErrForeign) {
				return err
			}
			return fmt.Errorf("opening state in %s: %w", dir, err)
		}
		if adopted {
			opts.Logger.Info().Str("dir", dir).Str("group", opts.Owner.Group).Str("changelog_topic", opts.Owner.ChangelogTopic).
				Msg("state without an owner (written by an older kdedup): trusted, and marked as this group's")
		}
	}
	// Loaders write their sstables here before Pebble ingests them; what
	// a crash left behind was never ingested.
	if err := errors.Join(s.fs.RemoveAll(s.fs.PathJoin(dir, loadDir)), s.fs.MkdirAll(s.fs.PathJoin(dir, loadDir), 0o755)); err != nil {
		db.Close()
		return fmt.Errorf("opening state in %s: preparing %s: %w", dir, loadDir, err)
	}
	s.db, s.po, s.corrupt = db, po, corrupt
	return nil
}

// loadDir is the directory, in the store's, of the Loader's sstables.
const loadDir = "kdedup-load"

// loadPath returns a new path for a Loader's sstable.
func (s *Store) loadPath() string {
	return s.fs.PathJoin(s.dir, loadDir, fmt.Sprintf("%06d.sst", s.load.Add(1)))
}

// writerOptions are the options of sstables a Loader writes: those of the
// store's own tables (filters, block sizes, compression) in its format.
func (s *Store) writerOptions() sstable.WriterOptions {
	return s.po.MakeWriterOptions(0, s.db.TableFormat())
}

// Close closes every open partition and the database.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return ErrClosed
	}
	var perr []error
	for _, p := range s.open {
		// What the partition holds in memory (a checkpoint not yet
		// written, or one being written) goes to Pebble first.
		perr = append(perr, p.Flush())
		p.stopBuild()
		p.release()
		p.closed = true
	}
	s.open = nil
	if err := errors.Join(perr...); err != nil {
		s.db.Close()
		s.db = nil
		return fmt.Errorf("closing state in %s: %w", s.dir, err)
	}
	err := s.db.Close()
	s.db = nil
	if err != nil {
		return fmt.Errorf("closing state in %s: %w", s.dir, err)
	}
	return nil
}

// OpenPartition opens the keyspace of topic/partition; a key retires once
// the partition's event time passes its expiry by lateness. A keyspace is
// open at most once at a time. It reads every stored key of the keyspace
// to build its key index (see Partition: about 0.15 s per million keys),
// holding the store's lock.
func (s *Store) OpenPartition(topic string, partition int32, lateness time.Duration) (*Partition, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return nil, ErrClosed
	}
	prefix := keyspacePrefix(topic, partition)
	if _, ok := s.open[string(prefix)]; ok {
		return nil, fmt.Errorf("opening state for %s/%d: %w", topic, partition, ErrPartitionOpen)
	}
	p := &Partition{
		store:     s,
		db:        s.db,
		topic:     topic,
		partition: partition,
		prefix:    prefix,
		lateness:  lateness.Milliseconds(),
	}
	st, err := p.readStamp()
	if err != nil {
		return nil, fmt.Errorf("opening state for %s/%d: %w", topic, partition, err)
	}
	p.stamp, p.pebbleStamp, p.mem, p.lastWrite = st, st, newMemChanges(), time.Now()
	// The key index: one scan of the keyspace's keys, on a goroutine of
	// its own (see indexBuild).
	if err := p.buildIndex(); err != nil {
		return nil, fmt.Errorf("opening state for %s/%d: indexing its keys: %w", topic, partition, err)
	}
	s.open[string(prefix)] = p
	return p, nil
}

// DropPartition deletes the whole keyspace of topic/partition, which must
// not be open. Other keyspaces are untouched.
func (s *Store) DropPartition(topic string, partition int32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return ErrClosed
	}
	prefix := keyspacePrefix(topic, partition)
	if _, ok := s.open[string(prefix)]; ok {
		return fmt.Errorf("dropping state of %s/%d: %w", topic, partition, ErrPartitionOpen)
	}
	if err := s.db.DeleteRange(prefix, prefixEnd(prefix), pebble.NoSync); err != nil {
		return fmt.Errorf("dropping state of %s/%d: %w", topic, partition, err)
	}
	return nil
}

// TopicPartition names a keyspace.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// Keyspaces lists every keyspace in the store with its stamp, open or not,
// in key order. It seeks once per keyspace: it does not scan keys.
func (s *Store) Keyspaces() (map[TopicPartition]Stamp, error) {
	s.mu.Lock()
	db := s.db
	s.mu.Unlock()
	if db == nil {
		return nil, ErrClosed
	}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{kindKeyspace}, UpperBound: []byte{kindKeyspace + 1}})
	if err != nil {
		return nil, fmt.Errorf("listing keyspaces: %w", err)
	}
	defer it.Close()
	out := map[TopicPartition]Stamp{}
	for valid := it.First(); valid; {
		topic, partition, n, ok := parsePrefix(it.Key())
		if !ok {
			return nil, fmt.Errorf("listing keyspaces: %w: key %x", ErrCorrupt, it.Key())
		}
		prefix := append([]byte(nil), it.Key()[:n]...)
		var st Stamp
		if v, closer, err := db.Get(stampKey(prefix)); err == nil {
			st, err = decodeStamp(v)
			closer.Close()
			if err != nil {
				return nil, fmt.Errorf("listing keyspaces: %s/%d: %w", topic, partition, err)
			}
		} else if !errors.Is(err, pebble.ErrNotFound) {
			return nil, fmt.Errorf("listing keyspaces: %w", err)
		} else {
			st.EventTime = math.MinInt64
		}
		out[TopicPartition{topic, partition}] = st
		valid = it.SeekGE(prefixEnd(prefix))
	}
	return out, it.Error()
}

// Usage is the disk space a store takes.
type Usage struct {
	// Total is every file: tables, write-ahead logs (Pebble keeps a few
	// obsolete ones, each about a memtable, to recycle), manifest, options.
	Total uint64
	// Tables is the live sstables: what the keys themselves take.
	Tables uint64
}

// DiskUsage returns the disk space the store takes.
func (s *Store) DiskUsage() Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return Usage{}
	}
	m := s.db.Metrics()
	return Usage{Total: m.DiskSpaceUsage(), Tables: m.Table.Local.LiveSize}
}

// Compact flushes the memtables and compacts the whole store, so that
// deleted keys leave the disk. Tests and benchmarks use it to measure; the
// processor relies on Pebble's background compactions.
func (s *Store) Compact(ctx context.Context) error {
	s.mu.Lock()
	db := s.db
	s.mu.Unlock()
	if db == nil {
		return ErrClosed
	}
	if err := db.Flush(); err != nil {
		return fmt.Errorf("flushing state: %w", err)
	}
	if err := db.Compact(ctx, []byte{kindKeyspace}, []byte{kindKeyspace + 1}, true); err != nil {
		return fmt.Errorf("compacting state: %w", err)
	}
	return nil
}

// pebbleLogger sends Pebble's messages to zerolog; Fatalf does not exit the
// process (Pebble calls it for invariant violations it then panics on).
type pebbleLogger struct{ l zerolog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug().Str("component", "pebble").Msgf(format, args...)
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error().Str("component", "pebble").Msgf(format, args...)
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error().Str("component", "pebble").Msgf(format, args...)
	panic(fmt.Sprintf(format, args...))
}

// Keys. A keyspace is everything under one prefix,
//
//	'p' | topic length uint16 | topic | partition uint32
//
// followed by one of
//
//	'e' | hash[16]                 -> entry
//	'r' | retire uint64 | hash[16] -> nothing: the retirement index
//	's'                            -> stamp
//
// retire is expiry + lateness with the sign bit flipped, so that big-endian
// byte order is time order and garbage collection reads the index from its
// start up to the watermark: O(retired keys), never a scan of live ones.
const (
	kindKeyspace = 'p'
	kindEntry    = 'e'
	kindRetire   = 'r'
	kindStamp    = 's'
)

func keyspacePrefix(topic string, partition int32) []byte {
	b := make([]byte, 0, 1+2+len(topic)+4)
	b = append(b, kindKeyspace)
	b = binary.BigEndian.AppendUint16(b, uint16(len(topic)))
	b = append(b, topic...)
	return binary.BigEndian.AppendUint32(b, uint32(partition))
}

func parsePrefix(k []byte) (topic string, partition int32, n int, ok bool) {
	if len(k) < 3 || k[0] != kindKeyspace {
		return "", 0, 0, false
	}
	tl := int(binary.BigEndian.Uint16(k[1:3]))
	if len(k) < 3+tl+4 {
		return "", 0, 0, false
	}
	return string(k[3 : 3+tl]), int32(binary.BigEndian.Uint32(k[3+tl:])), 3 + tl + 4, true
}

// prefixEnd returns the first key after every key starting with prefix.
// Prefixes end in the partition number; a partition of 0xffffffff would
// overflow, which Kafka's int32 partitions never reach (they are >= 0).
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}

func stampKey(prefix []byte) []byte {
	return append(append([]byte(nil), prefix...), kindStamp)
}

func appendEntryKey(b, prefix []byte, h dedup.Hash) []byte {
	b = append(b, prefix...)
	b = append(b, kindEntry)
	return append(b, h[:]...)
}

func appendRetireKey(b, prefix []byte, retire int64, h dedup.Hash) []byte {
	b = append(b, prefix...)
	b = append(b, kindRetire)
	b = binary.BigEndian.AppendUint64(b, uint64(retire)^(1<<63))
	return append(b, h[:]...)
}

func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
