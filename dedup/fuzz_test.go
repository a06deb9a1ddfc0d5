package dedup

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kdedup/kdedup/config"
)

var fuzzPaths = []string{"id", "data.resubmitCheckKey", "a.0", "a.1.b", "x"}

// FuzzJSON checks the one-pass scanner against encoding/json: the same
// values are valid, and every path yields what encoding/json decodes there.
func FuzzJSON(f *testing.F) {
	for _, s := range []string{
		`{"id":"a"}`, `{"data":{"resubmitCheckKey":"k\u00e9"}}`, `{"a":[1,{"b":2}]}`, `[]`, `{}`, `1e3`, `"x"`,
		`{"id":1,"id":{"x":1}}`, `{"data":{"resubmitCheckKey":1},"data":{}}`, `{"i\u0064":"\ud83d\ude00"}`,
		`{"id":"\ud800x"}`, "{\"id\":\"\xff\"}", `{"id":-0.5e-3}`, `{"id":01}`, `{"id":"a",}`, ` [ ] `, `nul`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var trie pathTrie
		for _, p := range fuzzPaths {
			trie.addPath(p)
		}
		trie.finish()
		d := jsonDoc{trie: &trie}
		d.reset(data)
		valid := d.parse()
		if valid != json.Valid(data) {
			t.Fatalf("valid %v, encoding/json says %v for %q", valid, !valid, data)
		}
		if !valid {
			return
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("encoding/json rejects %q: %v", data, err)
		}
		for _, p := range fuzzPaths {
			got, gotOK := d.get(trie.id(p))
			want, wantOK := navigate(v, p)
			if gotOK != wantOK {
				t.Fatalf("path %s of %q: found %v, encoding/json %v", p, data, gotOK, wantOK)
			}
			if !gotOK {
				continue
			}
			var w any
			dec := json.NewDecoder(bytes.NewReader(got))
			dec.UseNumber()
			if err := dec.Decode(&w); err != nil {
				t.Fatalf("path %s span %q is not JSON: %v", p, got, err)
			}
			if !equalJSON(w, want) {
				t.Fatalf("path %s of %q: %q, encoding/json %#v", p, data, got, want)
			}
			if got[0] == '"' {
				var s string
				_ = json.Unmarshal(got, &s)
				if u := unquoteInto(nil, got); string(u) != s {
					t.Fatalf("unquote %q = %q, encoding/json %q", got, u, s)
				}
			}
		}
	})
}

func navigate(v any, path string) (any, bool) {
	for _, seg := range strings.Split(path, ".") {
		switch c := v.(type) {
		case map[string]any:
			n, ok := c[seg]
			if !ok {
				return nil, false
			}
			v = n
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(c) || !isIndex(seg, i) {
				return nil, false
			}
			v = c[i]
		default:
			return nil, false
		}
	}
	return v, true
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// fuzzStreams are the configurations FuzzDecide checks every input
// against, all with a ttl of 1s. Each uses the rules of docs/decisions.md (source
// order, key_max_length, key_format, scope); header-json-fields, uuid and
// fields-first also keep its ttl_mode fixed and conflict on the value
// bytes, while short-refresh and compare add what the README documents
// beyond it (ttl_mode refresh, compare fields). Lateness varies: the
// default (the ttl), 0, 2s and 5s.
func fuzzStreams() []config.Stream {
	sec := config.Duration(time.Second)
	lat := func(d time.Duration) *config.Duration { c := config.Duration(d); return &c }
	return []config.Stream{
		{
			Name: "header-json-fields", TTL: sec,
			Key: []config.KeySource{
				{Header: "Idempotency-Key"},
				{JSON: "data.resubmitCheckKey"},
				{Fingerprint: &config.Fingerprint{Fields: []string{"user_id", "body"}}},
			},
			Scope:        []config.ScopePart{{Header: "tenant-id"}, {JSON: "tenant_id"}},
			KeyMaxLength: 40,
		},
		{
			Name: "uuid", TTL: sec, Lateness: lat(0),
			Key: []config.KeySource{
				{JSON: "data.resubmitCheckKey"},
				{Header: "Idempotency-Key"},
				{Fingerprint: &config.Fingerprint{Whole: true}},
			},
			Scope:     []config.ScopePart{{JSON: "tenant_id"}, {Header: "tenant-id"}},
			KeyFormat: config.KeyFormatUUID,
		},
		{
			Name: "short-refresh", TTL: sec, TTLMode: config.TTLRefresh, Lateness: lat(5 * time.Second),
			Key: []config.KeySource{
				{Header: "Idempotency-Key"},
				{JSON: "id"},
				{JSON: "a.0"},
				{JSON: "a.1.b"},
			},
			Scope:        []config.ScopePart{{Header: "tenant-id"}},
			KeyMaxLength: 16,
		},
		{
			Name: "compare", TTL: sec, Lateness: lat(2 * time.Second),
			Key: []config.KeySource{
				{JSON: "x"},
				{Header: "Idempotency-Key"},
				{Fingerprint: &config.Fingerprint{Fields: []string{"id", "a.1"}}},
			},
			Compare: []string{"body", "a.1.b"},
		},
		{
			// A field fingerprint as the only source reading JSON, and a
			// limit that a fingerprint key just meets.
			Name: "fields-first", TTL: sec,
			Key: []config.KeySource{
				{Fingerprint: &config.Fingerprint{Fields: []string{"body"}}},
				{Header: "Idempotency-Key"},
			},
			Scope:        []config.ScopePart{{JSON: "tenant_id"}},
			KeyMaxLength: 35,
		},
	}
}

// Operations of a FuzzDecide script, one per byte: the low 3 bits pick the
// operation, the high 5 bits are its argument a (0..31). Each operation
// changes the current record and decides it again, so that copies of one
// key meet within and across windows.
const (
	opRepeat  = iota // the same record again
	opLater          // timestamp + a*100ms (the ttl is 1s)
	opEarlier        // timestamp - a*100ms (a late record)
	opValue          // a%3: 0 appends a space, 2 re-indents JSON (other bytes, the same JSON); 1 restores the original value
	opHeaders        // a&1 drops the first header, a&2 the second; 0 restores both
	opJump           // timestamp + (a+1)*10s: the watermark retires earlier keys
	opBack           // the original timestamp
	opFlip           // one bit of the value flipped
)

func fuzzRecords(h1 string, v1 []byte, h2 string, v2 []byte, value []byte, ts int64, ops []byte) []Record {
	if len(ops) > 24 {
		ops = ops[:24]
	}
	satAdd := func(a, b int64) int64 {
		switch {
		case b > 0 && a > math.MaxInt64-b:
			return math.MaxInt64
		case b < 0 && a < math.MinInt64-b:
			return math.MinInt64
		}
		return a + b
	}
	cur := Record{Topic: "t", Timestamp: ts, Value: value}
	drop1, drop2 := false, false
	var recs []Record
	add := func() {
		r := cur
		r.Offset = int64(len(recs))
		r.Value = bytes.Clone(cur.Value)
		if !drop1 {
			r.Headers = append(r.Headers, Header{h1, v1})
		}
		if !drop2 {
			r.Headers = append(r.Headers, Header{h2, v2})
		}
		recs = append(recs, r)
	}
	add()
	add() // every record twice
	for _, b := range ops {
		a := int64(b >> 3)
		switch b & 7 {
		case opRepeat:
		case opLater:
			cur.Timestamp = satAdd(cur.Timestamp, a*100)
		case opEarlier:
			cur.Timestamp = satAdd(cur.Timestamp, -a*100)
		case opValue:
			var ind bytes.Buffer
			switch {
			case a%3 == 1:
				cur.Value = value
			case a%3 == 2 && json.Indent(&ind, cur.Value, "", " ") == nil:
				cur.Value = ind.Bytes()
			default:
				cur.Value = append(bytes.Clone(cur.Value), ' ')
			}
		case opHeaders:
			drop1, drop2 = a&1 != 0, a&2 != 0
		case opJump:
			cur.Timestamp = satAdd(cur.Timestamp, (a+1)*10000)
		case opBack:
			cur.Timestamp = ts
		case opFlip:
			if len(cur.Value) > 0 {
				v := bytes.Clone(cur.Value)
				v[int(a)*7%len(v)] ^= 1 << (a % 7)
				cur.Value = v
			}
		}
		add()
	}
	return recs
}

type decideSeed struct {
	h1     string
	v1     []byte
	h2     string
	v2     []byte
	value  []byte
	ts     int64
	script []byte
}

// decideSeeds is FuzzDecide's seed corpus; TestDecideSeedsReachEveryDecision
// checks that it reaches every decision in every stream.
func decideSeeds() []decideSeed {
	const uuid = "123e4567-e89b-12d3-a456-426614174000"
	op := func(o, a int) byte { return byte(a<<3 | o) }
	// A script reaching every decision: conflict, back, expiry (first_seen
	// again, replacing), duplicate of the new entry, a far jump, a late
	// record whose key is retired, header changes, a broken value.
	script := []byte{
		op(opValue, 0), op(opValue, 1), op(opValue, 2), op(opLater, 5), op(opLater, 5), op(opRepeat, 0),
		op(opValue, 0), op(opEarlier, 3), op(opJump, 0), op(opBack, 0), op(opHeaders, 1),
		op(opHeaders, 3), op(opRepeat, 0), op(opFlip, 2), op(opHeaders, 0), op(opLater, 31),
	}
	var seeds []decideSeed
	for _, s := range []struct {
		h1, v1, h2, v2, value string
	}{
		{"Idempotency-Key", "k1", "tenant-id", "t", `{"data":{"resubmitCheckKey":"k"},"tenant_id":"t","body":"b"}`},
		{"Idempotency-Key", uuid, "tenant-id", "t", `{"x":"k","body":"b1","a":[0,{"b":2}],"id":7}`},
		{"Idempotency-Key", strings.Repeat("k", 41), "tenant-id", "", `{"data":{"resubmitCheckKey":"` + strings.ToUpper(uuid) + `"}}`},
		{"X", "", "", "", `{"user_id":1,"body":"x"}`},
		{"X", "", "", "", `{}`},
		{"X", "", "", "", `{"data":`},
		{"Idempotency-Key", "", "tenant-id", "t", `{"data":{"resubmitCheckKey":1e3},"id":-0.5e-3,"x":true,"tenant_id":2}`},
		{"Idempotency-Key", "", "tenant-id", "t", `{"data":{"resubmitCheckKey":"k\u00e9"},"id":"\u0041","tenant_id":"t\n","x":"\ud83d\ude00"}`},
		{"idempotency-key", "k", "tenant-id", "t", `{"data":{"resubmitCheckKey":null},"id":"","a":[null,{"b":"z"}],"x":""}`},
		{"Idempotency-Key", "k", "Idempotency-Key", "k2", ` { "user_id" : [1, 2] , "body":"x" , "a":[1,{"b": {"c" : 1}}] } `},
		{"Idempotency-Key", "\xff\x00", "tenant-id", "\x00", `{"data":{"resubmitCheckKey":"\ud800x"},"id":01}`},
	} {
		for _, ts := range []int64{0, 1 << 62, math.MaxInt64 - 500, math.MinInt64 + 500} {
			seeds = append(seeds, decideSeed{s.h1, []byte(s.v1), s.h2, []byte(s.v2), []byte(s.value), ts, script})
		}
	}
	return seeds
}

// FuzzDecide checks the engine against the reference implementation of
// oracle_test.go: arbitrary headers and values, each decided twice and then
// changed by a script of operations (new timestamps, values and headers),
// through every configuration of fuzzStreams, with a map state. Every
// decision, key, entry and state change must be the oracle's, so first_seen,
// duplicate, conflict, expiry, retirement, invalid_key, missing_key and
// malformed are all checked, not just "no panic".
func FuzzDecide(f *testing.F) {
	for _, s := range decideSeeds() {
		f.Add(s.h1, s.v1, s.h2, s.v2, s.value, s.ts, s.script)
	}
	streams := fuzzStreams()
	rules := make([]*Rules, len(streams))
	for i, s := range streams {
		r, err := Compile(s)
		if err != nil {
			f.Fatal(err)
		}
		rules[i] = r
	}
	f.Fuzz(func(t *testing.T, h1 string, v1 []byte, h2 string, v2 []byte, value []byte, ts int64, ops []byte) {
		recs := fuzzRecords(h1, v1, h2, v2, value, ts, ops)
		for i := range streams {
			checkAgainstOracle(t, streams[i], rules[i], recs)
		}
	})
}

// checkAgainstOracle decides recs in order with a fresh engine and map
// state and with the oracle, and fails at the first difference.
func checkAgainstOracle(t *testing.T, s config.Stream, rules *Rules, recs []Record) *refModel {
	t.Helper()
	eng := NewEngine(rules)
	st := newMapState()
	ref := newRefModel(s)
	// The oracle does not compute digests: these maps check that the
	// engine's digests are a one-to-one function of what they hash.
	fpKey, fpOf := map[string]string{}, map[string]string{}            // fingerprint key <-> oracle's string
	hashOf, idOf := map[string]Hash{}, map[Hash]string{}               // scoped key
	payFP, payOf := map[string]Fingerprint{}, map[Fingerprint]string{} // payload fingerprint
	for i := range recs {
		rec := &recs[i]
		fail := func(format string, args ...any) {
			t.Helper()
			var b strings.Builder
			for j := 0; j <= i; j++ {
				fmt.Fprintf(&b, "\n  #%d ts=%d value=%q headers=%q", j, recs[j].Timestamp, recs[j].Value, recs[j].Headers)
			}
			t.Fatalf("stream %s, record #%d: %s\nrecords:%s", s.Name, i, fmt.Sprintf(format, args...), b.String())
		}
		d, err := eng.Decide(st, rec)
		if err != nil {
			fail("engine error %v", err)
		}
		key := bytes.Clone(d.Key)
		o := ref.decide(rec, func(string) string { return string(key) })
		if d.Reason != o.reason {
			fail("engine decides %v (key %q), oracle %v (key %q, fingerprint of %q)", d.Reason, d.Key, o.reason, o.key, o.fp)
		}
		if o.fp != "" {
			if !isFPKey(d.Key) {
				fail("fingerprint key %q is not fp: + 32 hex digits", d.Key)
			}
			if k, ok := fpKey[o.fp]; ok && k != string(d.Key) {
				fail("fingerprint of %q is %q, earlier %q", o.fp, d.Key, k)
			}
			if f, ok := fpOf[string(d.Key)]; ok && f != o.fp {
				fail("fingerprint key %q of both %q and %q", d.Key, f, o.fp)
			}
			fpKey[o.fp], fpOf[string(d.Key)] = string(d.Key), o.fp
		} else if !bytes.Equal(d.Key, o.key) || (d.Key == nil) != (o.key == nil) {
			fail("%v: key %q, oracle %q", d.Reason, d.Key, o.key)
		}
		if st.wm != ref.wm {
			fail("watermark %d, oracle %d", st.wm, ref.wm)
		}
		if len(st.m) != len(ref.state) {
			fail("state holds %d keys, oracle %d", len(st.m), len(ref.state))
		}
		switch d.Reason {
		case FirstSeen, Duplicate, Conflict:
		default:
			if d.Stored {
				fail("%v stored an entry", d.Reason)
			}
			continue
		}
		id := o.scope + "\x00" + string(key)
		if h, ok := hashOf[id]; ok && h != d.Hash {
			fail("key %q in scope %q hashes to %x, earlier %x", key, o.scope, d.Hash, h)
		}
		if x, ok := idOf[d.Hash]; ok && x != id {
			fail("hash %x of both %q and %q", d.Hash, x, id)
		}
		hashOf[id], idOf[d.Hash] = d.Hash, id
		if f, ok := payFP[o.payloadOf]; ok && f != d.Entry.Fingerprint {
			fail("payload %q fingerprints to %x, earlier %x", o.payloadOf, d.Entry.Fingerprint, f)
		}
		if p, ok := payOf[d.Entry.Fingerprint]; ok && p != o.payloadOf {
			fail("payload fingerprint %x of both %q and %q", d.Entry.Fingerprint, p, o.payloadOf)
		}
		payFP[o.payloadOf], payOf[d.Entry.Fingerprint] = d.Entry.Fingerprint, o.payloadOf
		got := d.Entry
		got.Fingerprint = Fingerprint{}
		if got != o.entry {
			fail("%v: entry %+v, oracle %+v", d.Reason, got, o.entry)
		}
		if d.Stored != o.stored {
			fail("%v: stored %v, oracle %v", d.Reason, d.Stored, o.stored)
		}
		if e, ok := st.m[d.Hash]; !ok || e != d.Entry {
			fail("state holds %+v (%v) for the key, decision says %+v", e, ok, d.Entry)
		}
	}
	return ref
}

// TestDecideSeedsReachEveryDecision keeps FuzzDecide's seed corpus honest:
// in every stream it must reach every decision the stream can take, an
// expired key decided first_seen again and (where lateness allows) a
// retired one.
func TestDecideSeedsReachEveryDecision(t *testing.T) {
	for _, s := range fuzzStreams() {
		rules, err := Compile(s)
		if err != nil {
			t.Fatal(err)
		}
		var reasons [numReasons]int
		expired, retired := 0, 0
		for _, seed := range decideSeeds() {
			ref := checkAgainstOracle(t, s, rules, fuzzRecords(seed.h1, seed.v1, seed.h2, seed.v2, seed.value, seed.ts, seed.script))
			for r, n := range ref.reasons {
				reasons[r] += n
			}
			expired += ref.expired
			retired += ref.retired
		}
		t.Logf("%s: %v expired=%d retired=%d", s.Name, reasons, expired, retired)
		for _, r := range Reasons() {
			// Where a source yields a key for every valid JSON value (a
			// fingerprint), missing_key cannot happen; a whole-value
			// fingerprint leaves nothing malformed either; with neither
			// key_max_length nor key_format no key is invalid.
			impossible := (r == MissingKey && s.Name != "short-refresh") ||
				(r == Malformed && s.Name == "uuid") ||
				(r == InvalidKey && s.KeyMaxLength == 0 && s.KeyFormat == "")
			if reasons[r] == 0 && !impossible {
				t.Errorf("%s: no seed reaches %v", s.Name, r)
			}
		}
		if expired == 0 || retired == 0 {
			t.Errorf("%s: the seeds expire %d keys and retire %d", s.Name, expired, retired)
		}
	}
}

// isFPKey reports whether k has a fingerprint key's shape: at most 35
// bytes, "fp:" and hex digits.
func isFPKey(k []byte) bool {
	if len(k) > 35 || len(k) <= 3 || !bytes.HasPrefix(k, []byte("fp:")) {
		return false
	}
	for _, c := range k[3:] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
