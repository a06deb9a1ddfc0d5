package dedup

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/kdedup/kdedup/config"
)

// mapState is the simplest State: a map and a watermark.
type mapState struct {
	m  map[Hash]Entry
	wm int64
}

func newMapState() *mapState { return &mapState{m: map[Hash]Entry{}, wm: math.MinInt64} }

func (s *mapState) Get(h Hash) (Entry, bool, error) { e, ok := s.m[h]; return e, ok, nil }
func (s *mapState) Put(h Hash, e Entry) error       { s.m[h] = e; return nil }
func (s *mapState) EventTime() int64                { return s.wm }
func (s *mapState) SetEventTime(ms int64)           { s.wm = ms }

const (
	sec  = int64(1000)
	min  = 60 * sec
	hour = 60 * min
)

func hdr(kv ...string) []Header {
	var hs []Header
	for i := 0; i+1 < len(kv); i += 2 {
		hs = append(hs, Header{Key: kv[i], Value: []byte(kv[i+1])})
	}
	return hs
}

func stream(mod func(*config.Stream)) config.Stream {
	s := config.Stream{
		Name:     "push",
		Input:    "push-events",
		TTL:      config.Duration(time.Hour),
		Lateness: durp(time.Hour),
		Key:      []config.KeySource{{Header: "Idempotency-Key"}, {JSON: "data.resubmitCheckKey"}},
		Scope:    []config.ScopePart{{Header: "tenant-id"}},
	}
	if mod != nil {
		mod(&s)
	}
	return s
}

type step struct {
	ts      int64
	headers []Header
	value   string
	want    Reason
	key     string // expected Decision.Key; "" skips the check
	first   int64  // expected Entry.Offset of the first-seen record for duplicate/conflict; -1 skips
}

func TestDecide(t *testing.T) {
	idem := func(k string) []Header { return hdr("Idempotency-Key", k, "tenant-id", "t1") }
	longKey := strings.Repeat("k", 70)
	cases := []struct {
		name   string
		stream config.Stream
		steps  []step
	}{
		{"first_seen duplicate conflict", stream(nil), []step{
			{0, idem("a"), `{"x":1}`, FirstSeen, "a", -1},
			{1, idem("a"), `{"x":1}`, Duplicate, "a", 0},
			{2, idem("a"), `{"x":2}`, Conflict, "a", 0},
			{3, idem("a"), `{"x":1}`, Duplicate, "a", 0}, // a conflict leaves the entry alone
			{4, idem("b"), `{"x":1}`, FirstSeen, "b", -1},
		}},
		{"boundary ts == first_seen+ttl is first_seen", stream(nil), []step{
			{10 * sec, idem("a"), `v`, FirstSeen, "a", -1},
			{10*sec + hour - 1, idem("a"), `v`, Duplicate, "a", 0},
			{10*sec + hour, idem("a"), `v`, FirstSeen, "a", -1},
			{10*sec + hour + 1, idem("a"), `v`, Duplicate, "a", 2},
		}},
		{"expiry replaces the entry", stream(nil), []step{
			{0, idem("a"), `old`, FirstSeen, "a", -1},
			{hour, idem("a"), `new`, FirstSeen, "a", -1},
			{hour + 1, idem("a"), `new`, Duplicate, "a", 1},
			{hour + 2, idem("a"), `old`, Conflict, "a", 1},
		}},
		{"ttl_mode fixed: duplicates do not extend", stream(nil), []step{
			{0, idem("a"), `v`, FirstSeen, "a", -1},
			{50 * min, idem("a"), `v`, Duplicate, "a", 0},
			{hour, idem("a"), `v`, FirstSeen, "a", -1},
		}},
		{"ttl_mode refresh: every duplicate restarts the window", stream(func(s *config.Stream) { s.TTLMode = config.TTLRefresh }), []step{
			{0, idem("a"), `v`, FirstSeen, "a", -1},
			{50 * min, idem("a"), `v`, Duplicate, "a", 0},
			{hour + 49*min, idem("a"), `v`, Duplicate, "a", 0},
			{hour + 50*min, idem("a"), `x`, Conflict, "a", 0}, // window now runs to 2h49m
			{2*hour + 49*min, idem("a"), `v`, FirstSeen, "a", -1},
		}},
		{"refresh: a conflict does not restart the window", stream(func(s *config.Stream) { s.TTLMode = config.TTLRefresh }), []step{
			{0, idem("a"), `v`, FirstSeen, "a", -1},
			{50 * min, idem("a"), `x`, Conflict, "a", 0},
			{hour, idem("a"), `v`, FirstSeen, "a", -1},
		}},
		{"invalid_key: longer than key_max_length, in full, no fall-through", stream(func(s *config.Stream) { s.KeyMaxLength = 64 }), []step{
			{0, hdr("Idempotency-Key", longKey), `{"data":{"resubmitCheckKey":"ok"}}`, InvalidKey, longKey, -1},
			{1, hdr("Idempotency-Key", longKey[:64]), `v`, FirstSeen, longKey[:64], -1},
		}},
		{"invalid_key: uuid shape", stream(func(s *config.Stream) { s.KeyFormat = config.KeyFormatUUID }), []step{
			{0, idem("123e4567-e89b-12d3-a456-426614174000"), `v`, FirstSeen, "123e4567-e89b-12d3-a456-426614174000", -1},
			{1, idem("123E4567-E89B-12D3-A456-426614174000"), `v`, FirstSeen, "", -1}, // case is part of the key
			{2, idem("123e4567e89b12d3a456426614174000"), `v`, InvalidKey, "123e4567e89b12d3a456426614174000", -1},
			{3, idem("123e4567-e89b-12d3-a456-42661417400g"), `v`, InvalidKey, "", -1},
			{4, idem("{123e4567-e89b-12d3-a456-426614174000}"), `v`, InvalidKey, "", -1},
			{5, nil, `{"data":{"resubmitCheckKey":"not-a-uuid"}}`, InvalidKey, "not-a-uuid", -1},
		}},
		{"missing_key", stream(nil), []step{
			{0, hdr("tenant-id", "t1"), `{"data":{}}`, MissingKey, "", -1},
			{1, hdr("Idempotency-Key", ""), `{"data":{"resubmitCheckKey":""}}`, MissingKey, "", -1},
			{2, nil, `{"data":{"resubmitCheckKey":null}}`, MissingKey, "", -1},
			{3, nil, `{"data":{"resubmitCheckKey":{"a":1}}}`, MissingKey, "", -1},
			{4, nil, `[1,2]`, MissingKey, "", -1},
			{5, hdr("idempotency-key", "a"), `{}`, MissingKey, "", -1}, // header names are case-sensitive
		}},
		{"malformed only when no source yields", stream(nil), []step{
			{0, nil, `{"data":`, Malformed, "", -1},
			{1, nil, ``, Malformed, "", -1},
			{2, idem("a"), `not json`, FirstSeen, "a", -1},
		}},
		{"missing_key without JSON sources ignores bad JSON", stream(func(s *config.Stream) {
			s.Key = []config.KeySource{{Header: "Idempotency-Key"}}
		}), []step{
			{0, nil, `{"data":`, MissingKey, "", -1},
		}},
		{"JSON source falls through to a later header", stream(func(s *config.Stream) {
			s.Key = []config.KeySource{{JSON: "id"}, {Header: "Idempotency-Key"}}
		}), []step{
			{0, idem("h"), `garbage`, FirstSeen, "h", -1},
			{1, idem("h"), `{"id":"j"}`, FirstSeen, "j", -1},
		}},
		{"JSON scalars: numbers and booleans as written, strings decoded", stream(func(s *config.Stream) {
			s.Key = []config.KeySource{{JSON: "id"}}
			s.Scope = nil
		}), []step{
			{0, nil, `{"id":1e3}`, FirstSeen, "1e3", -1},
			{1, nil, `{"id":1000}`, FirstSeen, "1000", -1},
			{2, nil, `{"id":true}`, FirstSeen, "true", -1},
			{3, nil, `{"id":"a\u0041\n"}`, FirstSeen, "aA\n", -1},
			{4, nil, ` { "id" : "aA\n" } `, Conflict, "aA\n", 3},
			{5, nil, `{"id":"x","id":"y"}`, FirstSeen, "y", -1}, // last member wins, as in encoding/json
			{6, nil, `{"i\u0064":"y"}`, Conflict, "y", 5},
		}},
		{"JSON path through arrays", stream(func(s *config.Stream) {
			s.Key = []config.KeySource{{JSON: "items.1.id"}}
		}), []step{
			{0, nil, `{"items":[{"id":"a"},{"id":"b"}]}`, FirstSeen, "b", -1},
			{1, nil, `{"items":[{"id":"a"}]}`, MissingKey, "", -1},
		}},
		{"repeated header: last occurrence counts", stream(nil), []step{
			{0, hdr("Idempotency-Key", "a", "Idempotency-Key", "b"), `v`, FirstSeen, "b", -1},
			{1, hdr("Idempotency-Key", "b"), `v`, Duplicate, "b", 0},
		}},
		{"scope namespaces keys; a missing part is empty", stream(nil), []step{
			{0, hdr("Idempotency-Key", "a", "tenant-id", "t1"), `v`, FirstSeen, "a", -1},
			{1, hdr("Idempotency-Key", "a", "tenant-id", "t2"), `v`, FirstSeen, "a", -1},
			{2, hdr("Idempotency-Key", "a"), `v`, FirstSeen, "a", -1},
			{3, hdr("Idempotency-Key", "a", "tenant-id", ""), `v`, Duplicate, "a", 2},
			{4, hdr("Idempotency-Key", "a", "tenant-id", "t2"), `v`, Duplicate, "a", 1},
		}},
		{"JSON scope", stream(func(s *config.Stream) {
			s.Key = []config.KeySource{{Header: "X-Client-Token"}, {JSON: "order_id"}}
			s.Scope = []config.ScopePart{{JSON: "tenant_id"}}
		}), []step{
			{0, nil, `{"order_id":"o1","tenant_id":"t1"}`, FirstSeen, "o1", -1},
			{1, nil, `{"order_id":"o1","tenant_id":"t2"}`, FirstSeen, "o1", -1},
			{2, hdr("X-Client-Token", "o1"), `{"tenant_id":"t1","order_id":"o1"}`, Conflict, "o1", 0},
			{3, hdr("X-Client-Token", "o1"), `{"order_id":"o1","tenant_id":"t1"}`, Duplicate, "o1", 0},
			{4, hdr("X-Client-Token", "o1"), `not json`, FirstSeen, "o1", -1}, // scope "" when the value is not JSON
		}},
		{"field fingerprint", stream(func(s *config.Stream) {
			s.Key = []config.KeySource{{Fingerprint: &config.Fingerprint{Fields: []string{"user_id", "template_id", "body"}}}}
			s.Scope = nil
		}), []step{
			{0, nil, `{"user_id":1,"template_id":"t","body":"hi","sent_at":1}`, FirstSeen, "", -1},
			{1, nil, `{"user_id":1,"template_id":"t","body":"hi","sent_at":2}`, Conflict, "", 0},
			{2, nil, "{\"body\" : \"hi\",\n \"template_id\":\"t\", \"user_id\": 1,\"sent_at\":1}", Conflict, "", 0}, // same key: white space and member order do not change it; the value bytes differ
			{3, nil, `{"user_id":1,"template_id":"t"}`, FirstSeen, "", -1},
			{4, nil, `{"user_id":1,"template_id":"t","body":null}`, Conflict, "", 3}, // absent hashes like null
			{5, nil, `[1]`, FirstSeen, "", -1},
			{6, nil, `{"user_id":`, Malformed, "", -1},
		}},
		{"whole-value fingerprint yields for any value", stream(func(s *config.Stream) {
			s.Key = []config.KeySource{{JSON: "id"}, {Fingerprint: &config.Fingerprint{Whole: true}}}
		}), []step{
			{0, nil, `not json`, FirstSeen, "", -1},
			{1, nil, `not json`, Duplicate, "", 0},
			{2, nil, `not json!`, FirstSeen, "", -1},
		}},
		{"compare fields tell conflict from duplicate", stream(func(s *config.Stream) { s.Compare = []string{"amount", "currency"} }), []step{
			{0, idem("a"), `{"amount":5,"currency":"EUR","sent_at":1}`, FirstSeen, "a", -1},
			{1, idem("a"), `{"amount":5,"currency":"EUR","sent_at":2}`, Duplicate, "a", 0},
			{2, idem("a"), `{"amount":6,"currency":"EUR","sent_at":1}`, Conflict, "a", 0},
		}},
		{"conflict compares value bytes only, never headers", stream(nil), []step{
			{0, hdr("Idempotency-Key", "a", "tenant-id", "t1", "trace", "1"), `v`, FirstSeen, "a", -1},
			{1, hdr("trace", "2", "Idempotency-Key", "a", "tenant-id", "t1"), `v`, Duplicate, "a", 0},
		}},
		{"lateness: a key retires once the partition's event time passes expiry+lateness", stream(func(s *config.Stream) { s.Lateness = durp(0) }), []step{
			{0, idem("a"), `v`, FirstSeen, "a", -1},
			{59 * min, idem("a"), `v`, Duplicate, "a", 0},
			{hour, idem("b"), `v`, FirstSeen, "b", -1},
			{59 * min, idem("a"), `v`, FirstSeen, "a", -1}, // late past the grace: retired
		}},
		{"lateness: late records within the grace are still caught", stream(nil), []step{
			{0, idem("a"), `v`, FirstSeen, "a", -1},
			{hour + 59*min, idem("b"), `v`, FirstSeen, "b", -1},
			{59 * min, idem("a"), `v`, Duplicate, "a", 0},
			{2 * hour, idem("b"), `v`, Duplicate, "b", 1},
			{59 * min, idem("a"), `v`, FirstSeen, "a", -1},
		}},
		{"timestamps near the int64 range do not overflow", stream(nil), []step{
			{math.MaxInt64 - 5, idem("a"), `v`, FirstSeen, "a", -1},
			{math.MaxInt64 - 1, idem("a"), `v`, Duplicate, "a", 0},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rules, err := Compile(tc.stream)
			if err != nil {
				t.Fatal(err)
			}
			eng := NewEngine(rules)
			st := newMapState()
			for i, s := range tc.steps {
				rec := Record{Topic: "push-events", Partition: 3, Offset: int64(i), Timestamp: s.ts, Value: []byte(s.value), Headers: s.headers}
				d, err := eng.Decide(st, &rec)
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if d.Reason != s.want {
					t.Fatalf("step %d (ts %d, %q): got %v, want %v", i, s.ts, s.value, d.Reason, s.want)
				}
				if s.key != "" && string(d.Key) != s.key {
					t.Errorf("step %d: key %q, want %q", i, d.Key, s.key)
				}
				switch d.Reason {
				case FirstSeen:
					if !d.Stored || d.Entry.Offset != int64(i) || d.Entry.FirstSeen != s.ts || d.Entry.Topic != "push-events" || d.Entry.Partition != 3 {
						t.Errorf("step %d: first_seen entry %+v", i, d.Entry)
					}
				case Duplicate, Conflict:
					if s.first >= 0 && d.Entry.Offset != s.first {
						t.Errorf("step %d: first-seen offset %d, want %d", i, d.Entry.Offset, s.first)
					}
					if d.Reason == Conflict && d.Stored {
						t.Errorf("step %d: a conflict changed the entry", i)
					}
				case MissingKey, Malformed:
					if d.Key != nil {
						t.Errorf("step %d: key %q for %v", i, d.Key, d.Reason)
					}
				}
			}
		})
	}
}

func TestFingerprintKeyShape(t *testing.T) {
	for _, fp := range []*config.Fingerprint{{Whole: true}, {Fields: []string{"a"}}} {
		rules, err := Compile(stream(func(s *config.Stream) { s.Key = []config.KeySource{{Fingerprint: fp}} }))
		if err != nil {
			t.Fatal(err)
		}
		d, err := NewEngine(rules).Decide(newMapState(), &Record{Value: []byte(`{"a":1}`)})
		if err != nil {
			t.Fatal(err)
		}
		k := string(d.Key)
		if len(k) != 35 || !strings.HasPrefix(k, "fp:") || strings.Trim(k[3:], "0123456789abcdef") != "" {
			t.Errorf("fingerprint %+v: key %q is not fp: + 32 hex digits", fp, k)
		}
	}
}

// The fingerprint key obeys key_max_length and key_format like any key.
func TestFingerprintKeyValidated(t *testing.T) {
	for _, mod := range []func(*config.Stream){
		func(s *config.Stream) { s.KeyMaxLength = 34 },
		func(s *config.Stream) { s.KeyFormat = config.KeyFormatUUID },
	} {
		rules, err := Compile(stream(func(s *config.Stream) {
			s.Key = []config.KeySource{{Fingerprint: &config.Fingerprint{Whole: true}}}
			mod(s)
		}))
		if err != nil {
			t.Fatal(err)
		}
		d, err := NewEngine(rules).Decide(newMapState(), &Record{Value: []byte(`x`)})
		if err != nil || d.Reason != InvalidKey {
			t.Errorf("got %v, %v; want invalid_key", d.Reason, err)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	for name, mod := range map[string]func(*config.Stream){
		"no ttl":       func(s *config.Stream) { s.TTL = 0 },
		"no key":       func(s *config.Stream) { s.Key = nil },
		"empty source": func(s *config.Stream) { s.Key = []config.KeySource{{}} },
		"bad path":     func(s *config.Stream) { s.Key = []config.KeySource{{JSON: "a..b"}} },
		"bad mode":     func(s *config.Stream) { s.TTLMode = "sliding" },
		"bad format":   func(s *config.Stream) { s.KeyFormat = "ulid" },
		"no fields":    func(s *config.Stream) { s.Key = []config.KeySource{{Fingerprint: &config.Fingerprint{}}} },
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Compile(stream(mod)); err == nil {
				t.Fatal("Compile accepted it")
			}
		})
	}
}

func TestReasonNames(t *testing.T) {
	want := "first_seen duplicate conflict invalid_key missing_key malformed"
	var got []string
	for _, r := range Reasons() {
		got = append(got, r.String())
		if p, ok := ParseReason(r.String()); !ok || p != r {
			t.Errorf("ParseReason(%q) = %v, %v", r, p, ok)
		}
	}
	if strings.Join(got, " ") != want {
		t.Errorf("reasons %q, want %q", got, want)
	}
}

func durp(d time.Duration) *config.Duration { c := config.Duration(d); return &c }

// TestRoute: Route gives a record with a valid key the hash Decide stores
// it under (so every copy goes to the same partition), and nothing for a
// record Decide would audit as missing, malformed or invalid.
func TestRoute(t *testing.T) {
	rules, err := Compile(stream(func(s *config.Stream) { s.KeyMaxLength = 8 }))
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(rules)
	for _, tc := range []struct {
		name    string
		headers []Header
		value   string
		ok      bool
	}{
		{"header key", hdr("Idempotency-Key", "k1", "tenant-id", "t"), `{}`, true},
		{"json key", hdr("tenant-id", "t"), `{"data":{"resubmitCheckKey":"k1"}}`, true},
		{"missing", hdr("tenant-id", "t"), `{}`, false},
		{"malformed", nil, `{`, false},
		{"too long", hdr("Idempotency-Key", "far-too-long"), `{}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &Record{Topic: "push-events", Partition: 3, Offset: 9, Timestamp: 5 * sec, Headers: tc.headers, Value: []byte(tc.value)}
			h, ok := e.Route(rec)
			if ok != tc.ok {
				t.Fatalf("Route ok = %v, want %v", ok, tc.ok)
			}
			d, err := e.Decide(newMapState(), rec)
			if err != nil {
				t.Fatal(err)
			}
			if ok && (d.Reason != FirstSeen || d.Hash != h) {
				t.Fatalf("Decide %v hash %x, Route hash %x", d.Reason, d.Hash, h)
			}
		})
	}
	// The same key under the same scope routes alike from any partition;
	// another tenant's does not.
	a, _ := e.Route(&Record{Partition: 0, Headers: hdr("Idempotency-Key", "k1", "tenant-id", "t"), Value: []byte(`{}`)})
	b, _ := e.Route(&Record{Partition: 2, Headers: hdr("Idempotency-Key", "k1", "tenant-id", "t"), Value: []byte(`{"x":1}`)})
	c, _ := e.Route(&Record{Partition: 0, Headers: hdr("Idempotency-Key", "k1", "tenant-id", "u"), Value: []byte(`{}`)})
	if a != b || a == c {
		t.Fatalf("routes %x %x %x", a, b, c)
	}
}

// TestKeyHash checks that the hash the admin API computes from a key and
// scope values is the one Decide stores the key under, for header and
// JSON scope parts, a missing part and escaped JSON.
func TestKeyHash(t *testing.T) {
	rules, err := Compile(stream(func(s *config.Stream) {
		s.Scope = []config.ScopePart{{Header: "tenant-id"}, {JSON: "region"}}
	}))
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(rules)
	for _, tc := range []struct {
		name    string
		headers []Header
		value   string
		key     string
		scope   []string
	}{
		{"both parts", hdr("Idempotency-Key", "k1", "tenant-id", "t1"), `{"region":"eu"}`, "k1", []string{"t1", "eu"}},
		{"json key, escaped part", hdr("tenant-id", "t1"), `{"data":{"resubmitCheckKey":"k\u00e9"},"region":"e\"u"}`, "k\u00e9", []string{"t1", `e"u`}},
		{"missing parts are empty", hdr("Idempotency-Key", "k2"), `{}`, "k2", nil},
		{"trailing part omitted", hdr("Idempotency-Key", "k3", "tenant-id", "t9"), `{}`, "k3", []string{"t9"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := e.Decide(newMapState(), &Record{Timestamp: sec, Headers: tc.headers, Value: []byte(tc.value)})
			if err != nil || d.Reason != FirstSeen {
				t.Fatalf("Decide = %v, %v", d.Reason, err)
			}
			h, err := rules.KeyHash([]byte(tc.key), tc.scope)
			if err != nil {
				t.Fatal(err)
			}
			if h != d.Hash {
				t.Errorf("KeyHash(%q, %q) = %x, Decide stored %x", tc.key, tc.scope, h, d.Hash)
			}
			other, _ := rules.KeyHash([]byte(tc.key), []string{"another-tenant"})
			if other == d.Hash {
				t.Errorf("another tenant's key hashes alike")
			}
		})
	}
	if _, err := rules.KeyHash([]byte("k"), []string{"a", "b", "c"}); !errors.Is(err, ErrScope) {
		t.Errorf("three scope values for two parts: %v, want ErrScope", err)
	}
}
