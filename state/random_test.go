package state_test

import (
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

// model is DESIGN.md 6.3 written as plainly as possible, with no hashing,
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
	seeds := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if *seedFlag != 0 {
		seeds = []uint64{*seedFlag}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			runRandomStream(t, seed, *eventsFlag)
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
			if err := b.Commit(next, 0); err != nil {
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
			reopened++
		}
	}
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
