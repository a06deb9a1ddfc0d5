package consumer

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/config"
	"github.com/kdedup/kdedup/dedup"
	"github.com/kdedup/kdedup/state"
)

// restoreFixture is a kfake cluster with push-events (one partition), its
// output, the audit and the changelog topics, and a processor of group "g"
// over a store of its own, for driving restores directly.
type restoreFixture struct {
	c     *kfake.Cluster
	cl    *kgo.Client // produces to the changelog and the input
	p     *Processor
	store *state.Store
	base  int64 // event time of the fixture's entries
}

func newRestoreFixture(t *testing.T, opts ...func(*Options)) *restoreFixture {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, hoInput, hoInput+".deduped", "dedup.audit", hoChangelog))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	f := &restoreFixture{c: c, cl: cl, base: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()}
	f.p, f.store = f.processor(t, t.TempDir(), opts...)
	return f
}

// processor returns a processor of group "g" over a new store in dir.
func (f *restoreFixture) processor(t *testing.T, dir string, opts ...func(*Options)) (*Processor, *state.Store) {
	t.Helper()
	rules, store := pushStore(t, dir)
	t.Cleanup(func() { store.Close() })
	o := Options{
		Brokers: f.c.ListenAddrs(), Group: "g", InstanceID: "i", Guarantee: config.ExactlyOnce,
		CommitInterval: 100 * time.Millisecond, AuditTopic: "dedup.audit", ChangelogTopic: hoChangelog,
		Streams:    []Stream{{Rules: rules, Input: hoInput, Output: hoInput + ".deduped"}},
		Partitions: map[string]int32{hoInput: 1, hoInput + ".deduped": 1, "dedup.audit": 1, hoChangelog: 1},
		Store:      store, Log: zerolog.Nop(),
		// Small: chunkedTransaction fills it several times over.
		RestoreBuffer: 64 << 10,
	}
	for _, fn := range opts {
		fn(&o)
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	p.assigned[tp{hoInput, 0}] = true
	return p, store
}

// hash returns the key hash the fixture stores for key i.
func hash(i int) dedup.Hash {
	var h dedup.Hash
	binary.BigEndian.PutUint64(h[:], uint64(i)*0x9e3779b97f4a7c15+1)
	binary.BigEndian.PutUint64(h[8:], uint64(i))
	return h
}

// transaction writes, as one committed step of push-events/0, an entry for
// each key in keys and the marker of input offset input.
func (f *restoreFixture) transaction(t *testing.T, input int64, keys ...int) {
	t.Helper()
	var rs []*kgo.Record
	for _, i := range keys {
		e := dedup.Entry{FirstSeen: f.base, Expiry: f.base + 3_600_000, Topic: hoInput, Offset: int64(i)}
		k, v := state.EntryChange(hoInput, 0, hash(i), &e)
		rs = append(rs, &kgo.Record{Topic: hoChangelog, Key: k, Value: v})
	}
	k, v := state.MarkerChange(hoInput, 0, input, f.base)
	rs = append(rs, &kgo.Record{Topic: hoChangelog, Key: k, Value: v})
	f.produce(t, rs...)
}

// chunkedTransaction writes, as the transaction of input offset input,
// entries for keys 100 to 100+restoreChunk+4: about 800 KB, more than a
// restore of the fixture's processors holds (RestoreBuffer: 64 KiB)
// before it writes them ahead of their marker.
func (f *restoreFixture) chunkedTransaction(t *testing.T, input int64) {
	t.Helper()
	keys := make([]int, restoreChunk+5)
	for i := range keys {
		keys[i] = 100 + i
	}
	f.transaction(t, input, keys...)
}

func (f *restoreFixture) produce(t *testing.T, rs ...*kgo.Record) {
	t.Helper()
	if err := f.cl.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// inputs writes n records without an idempotency key to push-events/0:
// decided missing_key, they change no state.
func (f *restoreFixture) inputs(t *testing.T, n int) {
	t.Helper()
	var rs []*kgo.Record
	for i := 0; i < n; i++ {
		rs = append(rs, &kgo.Record{Topic: hoInput, Value: []byte("{}"), Timestamp: time.UnixMilli(f.base)})
	}
	f.produce(t, rs...)
}

// commitGroup commits offset for push-events/0 in group g, as another
// member would.
func (f *restoreFixture) commitGroup(t *testing.T, offset int64) {
	t.Helper()
	var os kadm.Offsets
	os.AddOffset(hoInput, 0, offset, -1)
	resp, err := kadm.NewClient(f.cl).CommitOffsets(context.Background(), "g", os)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// has reports whether key i is stored in st's state.
func has(t *testing.T, st *partState, i int) bool {
	t.Helper()
	_, ok, err := st.part.Get(hash(i))
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestRestoreStaleTarget: a restore whose target went stale (another member
// committed beyond it) must not save a changelog position past changes it
// left out. Before the fix, restore(to=11) met transaction 2's marker
// (input 20), dropped transaction 2's entries and saved that marker's own
// offset: restore(to=20) then started after them, and their keys were
// missing (they would have decided first_seen again).
func TestRestoreStaleTarget(t *testing.T) {
	f := newRestoreFixture(t)
	f.inputs(t, 25)
	f.transaction(t, 10, 1, 2, 3)
	f.transaction(t, 20, 4, 5, 6)
	st, err := f.p.partition(tp{hoInput, 0})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := f.p.restore(ctx, st, 10); err != nil {
		t.Fatal(err)
	}
	if got := st.part.Stamp().Input; got != 10 {
		t.Fatalf("stamp after the first restore: input %d, want 10", got)
	}
	// Another member took the partition and committed transaction 2.
	f.commitGroup(t, 20)
	err = f.p.restore(ctx, st, 11)
	if !errors.Is(err, errStaleTarget) {
		t.Fatalf("restore to a stale target: %v, want errStaleTarget", err)
	}
	if got := st.part.Stamp().Input; got != 10 {
		t.Fatalf("stamp after the stale restore: input %d, want 10", got)
	}
	if err := f.p.restore(ctx, st, 20); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 6; i++ {
		if !has(t, st, i) {
			t.Errorf("key %d missing after restoring to 20", i)
		}
	}
	if got := st.part.Stamp().Input; got != 20 {
		t.Fatalf("stamp: input %d, want 20", got)
	}
}

// TestRestoreOffsetsMovedBack: the changelog holds a transaction beyond the
// committed offset and the group agrees on that offset (an operator moved
// it back). More than restoreChunk changes of that transaction precede its
// marker, so some were written to Pebble before the marker was read: the
// state must be dropped and rebuilt from the input, keeping none of them.
func TestRestoreOffsetsMovedBack(t *testing.T) {
	f := newRestoreFixture(t)
	f.inputs(t, 25)
	f.transaction(t, 10, 1, 2, 3)
	f.chunkedTransaction(t, 20)
	f.commitGroup(t, 10)
	st, err := f.p.partition(tp{hoInput, 0})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.p.restore(context.Background(), st, 10); err != nil {
		t.Fatal(err)
	}
	// Now a fresh host restores to 12, the offset the operator set.
	f.commitGroup(t, 12)
	p2, _ := f.processor(t, t.TempDir())
	st2, err := p2.partition(tp{hoInput, 0})
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.restore(context.Background(), st2, 12); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{100, 100 + restoreChunk} {
		if has(t, st2, i) {
			t.Errorf("key %d of a transaction the group no longer stands by is in the state", i)
		}
	}
	if got := st2.part.Stamp().Input; got != 12 {
		t.Fatalf("stamp: input %d, want 12", got)
	}
}

// TestRestoreSkipsForeignRecords: records of other partitions, and records
// that are not kdedup's at all, never stop a restore; a record of the
// partition itself in an unknown format version, or of a kind this build
// does not know, does, with an error that names the version or kind.
func TestRestoreSkipsForeignRecords(t *testing.T) {
	// A key of kind 'z' (unknown) naming push-events/partition.
	unknownKind := func(partition byte) []byte {
		return append([]byte{'z', byte(len(hoInput))}, append([]byte(hoInput), partition)...) // varint(partition) for small ones
	}
	t.Run("foreign", func(t *testing.T) {
		f := newRestoreFixture(t)
		f.produce(t,
			&kgo.Record{Topic: hoChangelog, Key: []byte("not kdedup's"), Value: []byte("x")},
			&kgo.Record{Topic: hoChangelog, Key: []byte{}, Value: []byte("x")},
			&kgo.Record{Topic: hoChangelog, Key: unknownKind(14), Value: []byte("x")}, // partition 7
		)
		// Another partition's marker in a future version.
		k, _ := state.MarkerChange(hoInput, 7, 5, f.base)
		f.produce(t, &kgo.Record{Topic: hoChangelog, Key: k, Value: []byte{9, 1, 1}})
		f.transaction(t, 10, 1, 2)
		st, err := f.p.partition(tp{hoInput, 0})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.p.restore(context.Background(), st, 10); err != nil {
			t.Fatalf("restore past foreign records: %v", err)
		}
		if !has(t, st, 1) || !has(t, st, 2) {
			t.Fatal("keys missing")
		}
	})
	for _, tc := range []struct {
		name  string
		key   func(f *restoreFixture) []byte
		value []byte
		want  string
	}{
		{"unknown marker version", func(f *restoreFixture) []byte { k, _ := state.MarkerChange(hoInput, 0, 20, f.base); return k }, []byte{9, 40, 1}, "version 9"},
		{"unknown kind", func(*restoreFixture) []byte { return unknownKind(0) }, []byte("x"), "kind 0x7a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newRestoreFixture(t)
			f.transaction(t, 10, 1, 2)
			f.produce(t, &kgo.Record{Topic: hoChangelog, Key: tc.key(f), Value: tc.value})
			f.transaction(t, 20, 3)
			st, err := f.p.partition(tp{hoInput, 0})
			if err != nil {
				t.Fatal(err)
			}
			err = f.p.restore(context.Background(), st, 20)
			if !errors.Is(err, state.ErrVersion) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("restore through its own unreadable record: %v, want state.ErrVersion naming %s", err, tc.want)
			}
		})
	}
}

// TestRestoreGivesUpOnRevoke: a restore notices that its partition was
// revoked while it runs, and stops; what it applied stays stamped, so that
// the next restore resumes there.
func TestRestoreGivesUpOnRevoke(t *testing.T) {
	f := newRestoreFixture(t)
	f.inputs(t, 5)
	f.transaction(t, 3, 1, 2)
	st, err := f.p.partition(tp{hoInput, 0})
	if err != nil {
		t.Fatal(err)
	}
	// The changelog reaches offset 3; the input then holds nothing up to
	// 30: the restore goes on to the input and waits there.
	obs := &restoreSteps{changelogDone: make(chan struct{})}
	f.p.obs = obs
	done := make(chan error, 1)
	go func() { done <- f.p.restore(context.Background(), st, 30) }()
	select {
	case <-obs.changelogDone:
	case err := <-done:
		t.Fatalf("restore ended before the revocation: %v", err)
	}
	f.p.rebalanced(false, map[string][]int32{hoInput: {0}})
	select {
	case err := <-done:
		if !errors.Is(err, errRevoked) {
			t.Fatalf("restore of a revoked partition: %v, want errRevoked", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a restore of a revoked partition went on")
	}
	if got := st.part.Stamp(); got.Input != 3 || got.Ahead || !has(t, st, 1) || !has(t, st, 2) {
		t.Fatalf("after the revoked restore: stamp %+v, keys 1, 2 stored %v %v; want input 3 and both", got, has(t, st, 1), has(t, st, 2))
	}
}

// restoreSteps observes a restore: changelogDone is closed when its
// changelog part has finished.
type restoreSteps struct {
	nopObserver
	changelogDone chan struct{}
	once          sync.Once
}

func (o *restoreSteps) Restored(_ string, _ int32, done, total int64) {
	if done == total {
		o.once.Do(func() { close(o.changelogDone) })
	}
}

// TestRestoreAheadNotTrusted: a restore from the start of a compacted
// changelog writes changes ahead of the partition's one marker. Stopped
// before that marker (here: its target went stale), it leaves a stamp
// whose input (0) would look valid for a group whose offsets went back to
// 0 (reset to the earliest, or expired). The stamp says Ahead, so the
// state is never decided from as it stands: the next restore confirms the
// changes by a marker or, as here, drops them.
func TestRestoreAheadNotTrusted(t *testing.T) {
	f := newRestoreFixture(t)
	f.chunkedTransaction(t, 20)
	f.commitGroup(t, 20)
	st, err := f.p.partition(tp{hoInput, 0})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.p.restore(context.Background(), st, 15); !errors.Is(err, errStaleTarget) {
		t.Fatalf("restore to a stale target: %v, want errStaleTarget", err)
	}
	if got := st.part.Stamp(); got.Input != 0 || !got.Ahead || !has(t, st, 100) {
		t.Fatalf("after the stopped restore: stamp %+v, key 100 stored %v; want input 0, ahead, stored", got, has(t, st, 100))
	}
	// The group's offsets went back to 0.
	f.commitGroup(t, 0)
	if !f.p.behind(nil, st, 0) {
		t.Fatal("a state holding changes ahead of its stamp is not behind")
	}
	if err := f.p.restore(context.Background(), st, 0); err != nil {
		t.Fatal(err)
	}
	if got := st.part.Stamp(); got.Input != 0 || got.Ahead || has(t, st, 100) {
		t.Fatalf("after restoring to 0: stamp %+v, key 100 stored %v; want input 0, not ahead, not stored", got, has(t, st, 100))
	}
}

// TestRestoreStalls: a restore that reads nothing (a transaction left open
// on the changelog stops every read_committed reader at it) gives up after
// RestoreStallTimeout rather than holding the loop and the partitions.
func TestRestoreStalls(t *testing.T) {
	f := newRestoreFixture(t, func(o *Options) { o.RestoreStallTimeout, o.TransactionTimeout = 2*time.Second, time.Second })
	f.transaction(t, 10, 1)
	// A transaction that never ends, opened before the restore's sentinel.
	k, v := state.MarkerChange(hoInput, 0, 11, f.base)
	hangTransaction(t, f.c, &kgo.Record{Topic: hoChangelog, Key: k, Value: v})
	st, err := f.p.partition(tp{hoInput, 0})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = f.p.restore(context.Background(), st, 11)
	if !errors.Is(err, errRestoreStalled) {
		t.Fatalf("restore behind a hanging transaction: %v, want errRestoreStalled", err)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("gave up after %v", took)
	}
	if rebuildReason(err) != RebuildRestoreStalled {
		t.Fatalf("reason %q", rebuildReason(err))
	}
}

// hangTransaction opens a transaction that writes r and is left open (for
// a minute, the longest kfake allows): every read_committed reader of r's
// partition stops at it. It returns the client holding it.
func hangTransaction(t *testing.T, c *kfake.Cluster, r *kgo.Record) *kgo.Client {
	t.Helper()
	txn, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.TransactionalID("hanging"),
		kgo.TransactionTimeout(time.Minute), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(txn.Close)
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := txn.ProduceSync(context.Background(), r).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return txn
}
