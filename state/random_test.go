package state_test

import (
	"context"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/kdedup/kdedup/config"
	"github.com/kdedup/kdedup/dedup"
	"github.com/kdedup/kdedup/state"
)

var (
	seedFlag   = flag.Uint64("seed", 0, "run TestRandomStream with this seed only")
	eventsFlag = flag.Int("events", 100_000, "events per seed in TestRandomStream")
)

// model is docs/decisions.md written as plainly as possible, with no hashing,
// no JSON parsing and no persistence: the generator tells it each record's
// intended key, tenant and payload.
type model struct {
	ttl, lateness int64
	refresh       bool
	maxLen        int
	wm            int64
	keys          map[string]modelEntry
}

type modelEntry struct {
	firstSeen, expiry int64
	payload           string
	offset            int64
}

type genRecord struct {
	rec     dedup.Record
	kind    string // "key", "missing", "malformed"
	tenant  string
	key     string
	payload string
}

func (m *model) decide(g *genRecord) (dedup.Reason, int64) {
	wm := m.wm
	m.wm = max(m.wm, g.rec.Timestamp)
	switch g.kind {
	case "missing":
		return dedup.MissingKey, -1
	case "malformed":
		return dedup.Malformed, -1
	}
	if len(g.key) > m.maxLen {
		return dedup.InvalidKey, -1
	}
	id := g.tenant + "\x00" + g.key
	e, ok := m.keys[id]
	ts := g.rec.Timestamp
	if !ok || ts >= e.expiry || wm >= e.expiry+m.lateness {
		m.keys[id] = modelEntry{ts, ts + m.ttl, g.payload, g.rec.Offset}
		return dedup.FirstSeen, g.rec.Offset
	}
	if e.payload != g.payload {
		return dedup.Conflict, e.offset
	}
	if m.refresh && ts+m.ttl > e.expiry {
		e.expiry = ts + m.ttl
		m.keys[id] = e
	}
	return dedup.Duplicate, e.offset
}

// generator makes a partition's worth of push events: new keys, exact
// copies, key reuse with another payload, keys that are too long, missing
// keys and broken JSON, with timestamps that mostly rise and sometimes
// arrive late, occasionally later than the stream's lateness.
type generator struct {
	rng    *rand.Rand
	clock  int64
	offset int64
	recent []genRecord
	next   int
}

func (g *generator) event() genRecord {
	g.clock += g.rng.Int64N(2000)
	ts := g.clock
	if g.rng.IntN(10) == 0 {
		ts -= g.rng.Int64N(25 * 60_000) // late, up to 25 minutes
	}
	var r genRecord
	build := true // a new payload needs its record built; a copy is reused byte for byte
	switch p := g.rng.IntN(100); {
	case p < 40 || len(g.recent) == 0:
		g.next++
		tenant := fmt.Sprintf("t%d", g.rng.IntN(3))
		key := fmt.Sprintf("k%d", g.next)
		if g.rng.IntN(50) == 0 {
			key = strings.Repeat("x", 40) + key // over key_max_length
		}
		// The same key under another tenant is another key.
		if g.rng.IntN(20) == 0 && len(g.recent) > 0 {
			key = g.recent[g.rng.IntN(len(g.recent))].key
		}
		r = genRecord{kind: "key", tenant: tenant, key: key, payload: fmt.Sprintf(`{"n":%d}`, g.rng.IntN(1e6))}
	case p < 75:
		r = g.recent[len(g.recent)-1-g.rng.IntN(min(len(g.recent), 500))] // exact copy
		build = false
	case p < 85:
		r = g.recent[len(g.recent)-1-g.rng.IntN(min(len(g.recent), 500))]
		r.payload = fmt.Sprintf(`{"n":%d}`, g.rng.IntN(1e6)) // same key, other payload
	case p < 93:
		r = genRecord{kind: "missing", payload: `{"n":1}`}
	default:
		r = genRecord{kind: "malformed", payload: `{"n":`}
	}
	switch {
	case r.kind != "key":
		r.rec = dedup.Record{Value: []byte(r.payload)}
	case !build:
	case g.rng.IntN(2) == 0: // half the keys travel in a header...
		r.rec = dedup.Record{
			Headers: []dedup.Header{{Key: "tenant-id", Value: []byte(r.tenant)}, {Key: "Idempotency-Key", Value: []byte(r.key)}},
			Value:   []byte(r.payload),
		}
	default: // ...half in the body
		r.rec = dedup.Record{
			Headers: []dedup.Header{{Key: "tenant-id", Value: []byte(r.tenant)}},
			Value:   []byte(r.payload[:len(r.payload)-1] + `,"data":{"resubmitCheckKey":"` + r.key + `"}}`),
		}
		r.payload = string(r.rec.Value)
	}
	r.rec.Topic, r.rec.Partition, r.rec.Offset, r.rec.Timestamp = "push-events", 0, g.offset, ts
	g.offset++
	if r.kind == "key" && build {
		g.recent = append(g.recent, r)
		if len(g.recent) > 2000 {
			g.recent = g.recent[1000:]
		}
	}
	return r
}

func TestRandomStream(t *testing.T) {
	eachSeed(t, func(t *testing.T, seed uint64) { runRandomStream(t, seed, *eventsFlag) })
}

// eachSeed runs fn in parallel subtests, one per seed: seeds 1 to 10, or
// the one -seed names.
func eachSeed(t *testing.T, fn func(t *testing.T, seed uint64)) {
	seeds := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if *seedFlag != 0 {
		seeds = []uint64{*seedFlag}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			fn(t, seed)
		})
	}
}

func runRandomStream(t *testing.T, seed uint64, events int) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	refresh := seed%2 == 0
	cfg := config.Stream{
		Name:         "push",
		TTL:          config.Duration(10 * time.Minute),
		Lateness:     durp(20 * time.Minute),
		Key:          []config.KeySource{{Header: "Idempotency-Key"}, {JSON: "data.resubmitCheckKey"}},
		Scope:        []config.ScopePart{{Header: "tenant-id"}},
		KeyMaxLength: 32,
	}
	if refresh {
		cfg.TTLMode = config.TTLRefresh
	}
	rules, err := dedup.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := &model{ttl: 10 * 60_000, lateness: 20 * 60_000, refresh: refresh, maxLen: 32, wm: math.MinInt64, keys: map[string]modelEntry{}}
	g := &generator{rng: rng, clock: 1_700_000_000_000}
	fs := vfs.NewMem()
	open := func() (*state.Store, *state.Partition) {
		s, err := state.Open("db", state.Options{FS: fs, MemtableSize: 2 << 20, CacheSize: 8 << 20})
		if err != nil {
			t.Fatal(err)
		}
		p, err := s.OpenPartition("push-events", 0, time.Duration(*cfg.Lateness))
		if err != nil {
			t.Fatal(err)
		}
		return s, p
	}
	store, part := open()
	defer func() { store.Close() }()
	// The replica is built from the changelog records of the committed
	// batches only, as another instance restoring the partition would.
	replicaStore, err := state.Open("replica", state.Options{FS: fs, MemtableSize: 2 << 20, CacheSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer replicaStore.Close()
	replica, err := replicaStore.OpenPartition("push-events", 0, time.Duration(*cfg.Lateness))
	if err != nil {
		t.Fatal(err)
	}
	eng := dedup.NewEngine(rules)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d (rerun: go test ./state -run 'TestRandomStream' -seed %d): %s", seed, seed, fmt.Sprintf(format, args...))
	}
	counts := map[dedup.Reason]int{}
	var collected, retired, aborted, reopened int
	// apply feeds a committed batch's changelog records to the replica.
	apply := func(keys, values [][]byte) {
		rb := replica.NewBatch()
		input := replica.Stamp().Input
		for i := range keys {
			c, err := state.ParseChange(keys[i], values[i])
			if err != nil {
				fail("changelog record: %v", err)
			}
			switch {
			case c.Kind == state.ChangeMarker:
				input = c.Input
				rb.SetEventTime(max(rb.EventTime(), c.EventTime))
			case c.Deleted:
				err = rb.Delete(c.Hash)
			default:
				err = rb.Put(c.Hash, c.Entry)
			}
			if err != nil {
				fail("applying the changelog: %v", err)
			}
		}
		if err := rb.Commit(input, 0); err != nil {
			fail("replica commit: %v", err)
		}
	}
	for done := 0; done < events; {
		n := 1 + rng.IntN(400)
		batch := make([]genRecord, 0, n)
		want := make([]dedup.Reason, 0, n)
		wantFirst := make([]int64, 0, n)
		for i := 0; i < n && done+i < events; i++ {
			r := g.event()
			reason, first := m.decide(&r)
			batch = append(batch, r)
			want = append(want, reason)
			wantFirst = append(wantFirst, first)
		}
		// A transaction that aborts: decide, then drop the batch. The
		// replay below must decide exactly the same.
		attempts := 1
		if rng.IntN(10) == 0 {
			attempts = 2
			aborted++
		}
		for a := 0; a < attempts; a++ {
			b := part.NewBatch()
			for i := range batch {
				d, err := eng.Decide(b, &batch[i].rec)
				if err != nil {
					fail("deciding offset %d: %v", batch[i].rec.Offset, err)
				}
				if d.Reason != want[i] {
					fail("offset %d (%s key %q tenant %q ts %d): engine %v, model %v", batch[i].rec.Offset, batch[i].kind, batch[i].key, batch[i].tenant, batch[i].rec.Timestamp, d.Reason, want[i])
				}
				if (d.Reason == dedup.Duplicate || d.Reason == dedup.Conflict || d.Reason == dedup.FirstSeen) && d.Entry.Offset != wantFirst[i] {
					fail("offset %d: first-seen offset %d, model %d", batch[i].rec.Offset, d.Entry.Offset, wantFirst[i])
				}
			}
			// Retire in the transaction now and then, writing tombstones,
			// as the runtime does (aborted attempts included: they must
			// leave no trace).
			var keys, values [][]byte
			b.Each(func(h dedup.Hash, e dedup.Entry) {
				k, v := state.EntryChange("push-events", 0, h, &e)
				keys, values = append(keys, k), append(values, v)
			})
			if rng.IntN(3) == 0 {
				n, _, err := b.Retire(1+rng.IntN(500), func(h dedup.Hash) {
					keys, values = append(keys, state.Tombstone("push-events", 0, h)), append(values, nil)
				})
				if err != nil {
					fail("retire: %v", err)
				}
				if a+1 == attempts {
					retired += n
				}
			}
			next := batch[len(batch)-1].rec.Offset + 1
			k, v := state.MarkerChange("push-events", 0, next, b.EventTime())
			keys, values = append(keys, k), append(values, v)
			if a+1 < attempts {
				b.Discard()
				continue
			}
			// Now and then as the runtime commits: Pebble's write goes
			// on while the checks below read through the batch.
			commit := b.Commit
			if rng.IntN(2) == 0 {
				commit = b.CommitAsync
			}
			if err := commit(next, 0); err != nil {
				fail("commit: %v", err)
			}
			apply(keys, values)
			for _, k := range keys {
				c, _ := state.ParseChange(k, []byte{})
				if c.Kind != state.ChangeEntry {
					continue
				}
				pe, pok, err1 := part.Get(c.Hash)
				re, rok, err2 := replica.Get(c.Hash)
				if err1 != nil || err2 != nil || pok != rok || pe != re {
					fail("key %x: primary %v %+v, replica %v %+v (%v %v)", c.Hash, pok, pe, rok, re, err1, err2)
				}
			}
			if ps, rs := part.Stamp(), replica.Stamp(); ps.Input != rs.Input || ps.EventTime != rs.EventTime || ps.Keys != rs.Keys {
				fail("stamps: primary %+v, replica %+v", ps, rs)
			}
			if rng.IntN(8) == 0 {
				checkIndexes(fail, part, replica)
			}
		}
		for _, w := range want {
			counts[w]++
		}
		done += len(batch)
		if rng.IntN(4) == 0 {
			// Local garbage collection of every retired key, as a store
			// without a changelog would; the replica does the same to stay
			// comparable (Retire above covers partial limits).
			c, _, err := part.Collect(math.MaxInt, nil)
			if err != nil {
				fail("collect: %v", err)
			}
			if _, _, err := replica.Collect(math.MaxInt, nil); err != nil {
				fail("replica collect: %v", err)
			}
			collected += c
			checkIndexes(fail, part, replica)
		}
		if rng.IntN(100) == 0 {
			stamp := part.Stamp()
			if err := store.Close(); err != nil {
				fail("close: %v", err)
			}
			store, part = open()
			if part.Stamp() != stamp {
				fail("stamp %+v after reopen, was %+v", part.Stamp(), stamp)
			}
			checkIndexes(fail, part)
			reopened++
		}
	}
	checkIndexes(fail, part, replica)
	for _, r := range dedup.Reasons() {
		if counts[r] == 0 {
			fail("the stream never produced %v: the generator is too narrow (%v)", r, counts)
		}
	}
	if collected == 0 || retired == 0 {
		fail("garbage collection never deleted a key (collected %d, retired %d)", collected, retired)
	}
	t.Logf("seed %d refresh=%v: %v; %d keys collected, %d retired in transactions, %d aborted batches replayed, %d reopenings, %d keys stored (replica %d)", seed, refresh, counts, collected, retired, aborted, reopened, part.Stamp().Keys, replica.Stamp().Keys)
}

func durp(d time.Duration) *config.Duration { c := config.Duration(d); return &c }

// checkIndexes compares each partition's key index with what Pebble holds.
func checkIndexes(fail func(string, ...any), parts ...*state.Partition) {
	for _, p := range parts {
		if err := state.CheckIndex(p); err != nil {
			fail("key index: %v", err)
		}
	}
}

// TestRandomIndex drives partitions through random sequences of what can
// change their keys (batches committed and discarded, with Gets, Puts,
// Deletes and Retire; blind restore batches, with and without CountKeys;
// Collect; a drop and reopen; closing and reopening the partition and the
// store) over keys that often share their first 64 bits (prefix 0 among
// them), and checks after each step that every probed key's Get agrees
// with a model and that the key index counts exactly what Pebble holds:
// the index must never say absent for a stored key.
func TestRandomIndex(t *testing.T) {
	eachSeed(t, func(t *testing.T, seed uint64) { runRandomIndex(t, seed, max(*eventsFlag/50, 200)) })
}

func runRandomIndex(t *testing.T, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d))
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d (rerun: go test ./state -run 'TestRandomIndex' -seed %d): %s", seed, seed, fmt.Sprintf(format, args...))
	}
	// Keys: a few hundred 64-bit prefixes, each with up to four keys.
	var keys []dedup.Hash
	for i := 0; i < 300; i++ {
		var h dedup.Hash
		if i > 0 {
			for j := 0; j < 8; j++ {
				h[j] = byte(rng.Uint32())
			}
		}
		for n := 1 + rng.IntN(4); n > 0; n-- {
			for j := 8; j < len(h); j++ {
				h[j] = byte(rng.Uint32())
			}
			keys = append(keys, h)
		}
	}
	const topic = "push-events"
	lateness := time.Minute
	fs := vfs.NewMem()
	var store *state.Store
	parts := make([]*state.Partition, 2)
	models := []map[dedup.Hash]dedup.Entry{{}, {}}
	keysExact := []bool{true, true} // the stamp's Keys is exact (no blind batch since CountKeys)
	openPart := func(i int) {
		p, err := store.OpenPartition(topic, int32(i), lateness)
		if err != nil {
			fail("open partition %d: %v", i, err)
		}
		parts[i] = p
	}
	openStore := func() {
		var err error
		// Odd seeds bound the indexes to about one partition's: the
		// other does without, or both, as their keys grow.
		budget := [2]int64{0, 6 << 10}[seed%2]
		if store, err = state.Open("db", state.Options{FS: fs, MemtableSize: 1 << 20, CacheSize: 1 << 20, IndexMemory: budget}); err != nil {
			fail("open: %v", err)
		}
		openPart(0)
		openPart(1)
	}
	openStore()
	defer func() { store.Close() }()
	clock := int64(1_700_000_000_000)
	entry := func(pn int) dedup.Entry {
		e := dedup.Entry{FirstSeen: clock - rng.Int64N(60_000), Topic: topic, Partition: int32(pn), Offset: rng.Int64N(1 << 40)}
		e.Expiry = e.FirstSeen + 1 + rng.Int64N(5*60_000)
		e.Fingerprint[0] = byte(rng.Uint32())
		return e
	}
	// check probes keys (all of them now and then) against the model.
	indexLess, filtered := 0, 0
	check := func(step int, what string, pn int) {
		t.Helper()
		p, m := parts[pn], models[pn]
		if state.IndexLess(p) {
			indexLess++
		}
		if state.IndexFiltered(p) {
			filtered++
		}
		probe := keys
		if rng.IntN(4) != 0 {
			probe = make([]dedup.Hash, 50)
			for i := range probe {
				probe[i] = keys[rng.IntN(len(keys))]
			}
		}
		for _, h := range probe {
			e, ok, err := p.Get(h)
			want, wok := m[h]
			if err != nil || ok != wok || e != want {
				fail("step %d (%s), partition %d, key %x: Get = %v %+v %v, model %v %+v", step, what, pn, h, ok, e, err, wok, want)
			}
		}
		if err := state.CheckIndex(p); err != nil {
			fail("step %d (%s): %v", step, what, err)
		}
		if keysExact[pn] && p.Stamp().Keys != int64(len(m)) {
			fail("step %d (%s), partition %d: stamp counts %d keys, model %d", step, what, pn, p.Stamp().Keys, len(m))
		}
	}
	counts := map[string]int{}
	var input int64
	for step := 0; step < steps; step++ {
		pn := rng.IntN(2)
		p, m := parts[pn], models[pn]
		clock += rng.Int64N(30_000)
		input++
		var what string
		switch r := rng.IntN(100); {
		case r < 50:
			what = "batch"
			b := p.NewBatch()
			if state.IndexStale(p) {
				fail("step %d: NewBatch left the index stale", step)
			}
			overlay := map[dedup.Hash]*dedup.Entry{} // nil: deleted
			view := func(h dedup.Hash) (dedup.Entry, bool) {
				if e, ok := overlay[h]; ok {
					if e == nil {
						return dedup.Entry{}, false
					}
					return *e, true
				}
				e, ok := m[h]
				return e, ok
			}
			for n := rng.IntN(60); n > 0; n-- {
				h := keys[rng.IntN(len(keys))]
				switch o := rng.IntN(10); {
				case o < 5: // as the engine: Get, then Put if absent or now and then anyway
					e, ok, err := b.Get(h)
					we, wok := view(h)
					if err != nil || ok != wok || e != we {
						fail("step %d: batch Get %x = %v %+v %v, model %v %+v", step, h, ok, e, err, wok, we)
					}
					if !ok || rng.IntN(3) == 0 {
						e := entry(pn)
						if err := b.Put(h, e); err != nil {
							fail("step %d: put: %v", step, err)
						}
						overlay[h] = &e
					}
				case o < 8: // Put without a Get first
					e := entry(pn)
					if err := b.Put(h, e); err != nil {
						fail("step %d: put: %v", step, err)
					}
					overlay[h] = &e
				default:
					if err := b.Delete(h); err != nil {
						fail("step %d: delete: %v", step, err)
					}
					overlay[h] = nil
				}
			}
			b.SetEventTime(max(b.EventTime(), clock))
			if rng.IntN(3) == 0 {
				what = "batch+retire"
				if _, _, err := b.Retire(1+rng.IntN(100), func(h dedup.Hash) { overlay[h] = nil }); err != nil {
					fail("step %d: retire: %v", step, err)
				}
			}
			if rng.IntN(5) == 0 {
				what += " discarded"
				b.Discard()
				break
			}
			commit := b.Commit
			if rng.IntN(2) == 0 {
				what += " async"
				commit = b.CommitAsync
			}
			if err := commit(input, input); err != nil {
				fail("step %d: commit: %v", step, err)
			}
			for h, e := range overlay {
				if e == nil {
					delete(m, h)
				} else {
					m[h] = *e
				}
			}
		case r < 58:
			what = "load"
			l, err := p.NewLoader(0)
			if err != nil {
				fail("step %d: new loader: %v", step, err)
			}
			// Changes since the last Mark reach the model only when a
			// later Mark confirms them, or a Commit writes them.
			pending := map[dedup.Hash]*dedup.Entry{}
			apply := func() {
				for h, e := range pending {
					if e == nil {
						delete(m, h)
					} else {
						m[h] = *e
					}
				}
				clear(pending)
			}
			for n := 1 + rng.IntN(120); n > 0; n-- {
				h := keys[rng.IntN(len(keys))]
				switch k := rng.IntN(20); {
				case k < 6:
					if err := l.Delete(h); err != nil {
						fail("step %d: loader delete: %v", step, err)
					}
					pending[h] = nil
				case k < 17:
					e := entry(pn)
					if err := l.Put(h, e); err != nil {
						fail("step %d: loader put: %v", step, err)
					}
					pending[h] = &e
				case k < 18:
					l.Mark()
					apply()
				case k < 19:
					l.Rollback()
					clear(pending)
				default:
					// Written ahead of a Mark: they stay.
					apply()
					if err := l.Commit(context.Background(), input, input); err != nil {
						fail("step %d: loader commit: %v", step, err)
					}
				}
			}
			l.Mark()
			apply()
			if err := l.Commit(context.Background(), input, input); err != nil {
				fail("step %d: loader commit: %v", step, err)
			}
			if err := l.Wait(); err != nil {
				fail("step %d: loader wait: %v", step, err)
			}
		case r < 65:
			what = "blind"
			b := p.NewBlindBatch()
			for n := 1 + rng.IntN(80); n > 0; n-- {
				h := keys[rng.IntN(len(keys))]
				if rng.IntN(3) == 0 {
					if err := b.Delete(h); err != nil {
						fail("step %d: blind delete: %v", step, err)
					}
					delete(m, h)
				} else {
					e := entry(pn)
					if err := b.Put(h, e); err != nil {
						fail("step %d: blind put: %v", step, err)
					}
					m[h] = e
				}
			}
			if err := b.Commit(input, input); err != nil {
				fail("step %d: blind commit: %v", step, err)
			}
			keysExact[pn] = false
			if rng.IntN(2) == 0 {
				what = "blind+count"
				n, err := p.CountKeys()
				if err != nil || n != int64(len(m)) {
					fail("step %d: CountKeys = %d, %v; model %d", step, n, err, len(m))
				}
				if state.IndexStale(p) {
					fail("step %d: CountKeys left the index stale", step)
				}
				keysExact[pn] = true
			}
		case r < 80:
			what = "collect"
			if _, _, err := p.Collect(1+rng.IntN(200), func(h dedup.Hash) { delete(m, h) }); err != nil {
				fail("step %d: collect: %v", step, err)
			}
		case r < 85:
			what = "drop"
			p.Close()
			if err := store.DropPartition(topic, int32(pn)); err != nil {
				fail("step %d: drop: %v", step, err)
			}
			openPart(pn)
			clear(m)
			keysExact[pn] = true
		case r < 90:
			what = "reopen partition"
			p.Close()
			openPart(pn)
		case r < 94:
			what = "reopen store"
			if err := store.Close(); err != nil {
				fail("step %d: close: %v", step, err)
			}
			openStore()
		default:
			what = "probe"
		}
		counts[what]++
		check(step, what, pn)
	}
	check(steps, "end", 0)
	check(steps, "end", 1)
	t.Logf("seed %d: %d steps %v; %d and %d keys stored; partitions checked without an index: %d, with a filter: %d", seed, steps, counts, len(models[0]), len(models[1]), indexLess, filtered)
}
