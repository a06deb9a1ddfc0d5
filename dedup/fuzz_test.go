package dedup

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

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

// FuzzDecide feeds arbitrary headers and values through every kind of key
// source: no panic, a known reason, a key exactly when the reason has one,
// and the same decision from a second engine.
func FuzzDecide(f *testing.F) {
	f.Add("Idempotency-Key", []byte("k1"), "tenant-id", []byte("t"), []byte(`{"data":{"resubmitCheckKey":"k"},"tenant_id":"t"}`), int64(0))
	f.Add("X", []byte(""), "", []byte(nil), []byte(`{"user_id":1,"body":"x"}`), int64(-1))
	f.Add("Idempotency-Key", []byte("\xff\x00"), "tenant-id", []byte("\x00"), []byte(`{"data":`), int64(1<<62))
	cfg := stream(func(s *config.Stream) {
		s.Key = []config.KeySource{
			{Header: "Idempotency-Key"},
			{JSON: "data.resubmitCheckKey"},
			{Fingerprint: &config.Fingerprint{Fields: []string{"user_id", "body"}}},
		}
		s.Scope = []config.ScopePart{{Header: "tenant-id"}, {JSON: "tenant_id"}}
		s.KeyMaxLength = 16
		s.Compare = []string{"body"}
	})
	rules, err := Compile(cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, h1 string, v1 []byte, h2 string, v2 []byte, value []byte, ts int64) {
		rec := Record{Topic: "t", Timestamp: ts, Value: value, Headers: []Header{{h1, v1}, {h2, v2}}}
		d1, err := NewEngine(rules).Decide(newMapState(), &rec)
		if err != nil {
			t.Fatal(err)
		}
		d2, _ := NewEngine(rules).Decide(newMapState(), &rec)
		if d1.Reason != d2.Reason || !bytes.Equal(d1.Key, d2.Key) || d1.Hash != d2.Hash {
			t.Fatalf("engines disagree: %+v vs %+v", d1, d2)
		}
		switch d1.Reason {
		case FirstSeen, InvalidKey:
			if len(d1.Key) == 0 {
				t.Fatalf("%v without a key", d1.Reason)
			}
		case MissingKey, Malformed:
			if d1.Key != nil {
				t.Fatalf("%v with key %q", d1.Reason, d1.Key)
			}
		default:
			t.Fatalf("reason %v on an empty state", d1.Reason)
		}
	})
}
