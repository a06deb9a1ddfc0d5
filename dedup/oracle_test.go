package dedup

// A reference implementation of the decisions, written from the contract
// (docs/decisions.md, README "Decisions" and "Windows, lateness and garbage
// collection") for FuzzDecide to check the engine against. It reads the
// stream's config.Stream directly, never the compiled Rules, and uses
// encoding/json, regexp and plain maps: nothing of the engine's scanner,
// hashing or helpers. Clarity over speed.
//
// What it cannot do without copying the engine is compute SHA-256 digests
// in the engine's exact layout, so it does not: a fingerprint key or a
// payload fingerprint is represented by a canonical string of what it
// hashes (refFP), and the test checks that the engine maps equal strings to
// equal digests and different strings to different digests.

import (
	"bytes"
	"encoding/json"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/kdedup/kdedup/config"
)

// refOutcome is what the oracle expects for one record.
type refOutcome struct {
	reason Reason
	// key is the key as extracted; nil for missing_key and malformed. For a
	// fingerprint key it is nil and fp holds what the key hashes.
	key []byte
	fp  string // non-empty: a fingerprint key (the engine's "fp:" + hex)
	// scope is the canonical form of the scope parts (first_seen,
	// duplicate, conflict): equal scope and key, equal Hash.
	scope string
	// payload is what the payload fingerprint hashes.
	payload string
	// entry is the key's entry after the decision (first_seen, duplicate,
	// conflict); its Fingerprint is left zero (see payloadOf).
	entry Entry
	// payloadOf is the payload string of entry.
	payloadOf string
	stored    bool
}

// refEntry is the oracle's stored entry.
type refEntry struct {
	e       Entry
	payload string
}

// refModel is the oracle: a stream's rules and one partition's state.
type refModel struct {
	s        config.Stream
	ttl      int64
	lateness int64
	wm       int64
	// state is keyed by scope + "\x00" + the key's identity (the key's
	// bytes, or for a fingerprint key the engine's key text once the test
	// has checked it against the oracle's fingerprint string).
	state map[string]refEntry
	// Counts of what the decisions reached, for checking the seed corpus:
	// decisions by reason, first_seen after the window ended (expired) and
	// first_seen inside the window of a retired key (retired).
	reasons          [numReasons]int
	expired, retired int
}

func newRefModel(s config.Stream) *refModel {
	m := &refModel{
		s:     s,
		ttl:   time.Duration(s.TTL).Milliseconds(),
		wm:    math.MinInt64,
		state: map[string]refEntry{},
	}
	m.lateness = m.ttl
	if s.Lateness != nil {
		m.lateness = time.Duration(*s.Lateness).Milliseconds()
	}
	return m
}

var refUUID = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// refFPKeyLen is the length of a fingerprint key: "fp:" + 32 hex digits.
const refFPKeyLen = 35

// extract applies the key rules: sources in order, the first non-empty key
// wins; a JSON source on a value that is not JSON yields nothing.
func (m *refModel) extract(rec *Record) (key []byte, fp string, sawInvalid bool) {
	valid := json.Valid(rec.Value)
	for _, src := range m.s.Key {
		switch {
		case src.Header != "":
			if v, ok := refHeader(rec.Headers, src.Header); ok && len(v) > 0 {
				return v, "", false
			}
		case src.JSON != "":
			if !valid {
				sawInvalid = true
				continue
			}
			if k, ok := refScalar(rec.Value, src.JSON); ok && len(k) > 0 {
				return k, "", false
			}
		case src.Fingerprint != nil && !src.Fingerprint.Whole:
			if !valid {
				sawInvalid = true
				continue
			}
			return nil, "fields\x00" + refFields(rec.Value, src.Fingerprint.Fields), false
		case src.Fingerprint != nil:
			return nil, "value\x00" + string(rec.Value), false
		}
	}
	return nil, "", sawInvalid
}

// decide is the oracle's decision for rec. identity names a fingerprint
// key (the engine's key text, checked by the caller); it is unused for other
// keys.
func (m *refModel) decide(rec *Record, identity func(fp string) string) refOutcome {
	o := m.decide1(rec, identity)
	m.reasons[o.reason]++
	return o
}

func (m *refModel) decide1(rec *Record, identity func(fp string) string) refOutcome {
	wm := m.wm
	if rec.Timestamp > m.wm {
		m.wm = rec.Timestamp
	}
	key, fp, sawInvalid := m.extract(rec)
	var o refOutcome
	o.key, o.fp = key, fp
	if key == nil && fp == "" {
		if sawInvalid {
			o.reason = Malformed
		} else {
			o.reason = MissingKey
		}
		return o
	}
	n := len(key)
	if fp != "" {
		n = refFPKeyLen
	}
	if m.s.KeyMaxLength > 0 && n > m.s.KeyMaxLength {
		o.reason = InvalidKey
		return o
	}
	if m.s.KeyFormat == config.KeyFormatUUID && (fp != "" || !refUUID.Match(key)) {
		o.reason = InvalidKey
		return o
	}
	o.scope = m.scopeOf(rec)
	o.payload = m.payloadOf(rec)
	id := string(key)
	if fp != "" {
		id = identity(fp)
	}
	id = o.scope + "\x00" + id
	old, ok := m.state[id]
	// Live: timestamp < expiry, and not retired: the watermark before
	// this record has not reached expiry + lateness.
	live := ok && rec.Timestamp < old.e.Expiry && wm < refAddSat(old.e.Expiry, m.lateness)
	switch {
	case !live:
		switch {
		case ok && rec.Timestamp >= old.e.Expiry:
			m.expired++
		case ok:
			m.retired++
		}
		o.reason = FirstSeen
		o.entry = Entry{
			FirstSeen: rec.Timestamp,
			Expiry:    refAddSat(rec.Timestamp, m.ttl),
			Topic:     rec.Topic,
			Partition: rec.Partition,
			Offset:    rec.Offset,
		}
		o.payloadOf = o.payload
		o.stored = true
		m.state[id] = refEntry{o.entry, o.payload}
	case old.payload == o.payload:
		o.reason = Duplicate
		o.entry, o.payloadOf = old.e, old.payload
		if exp := refAddSat(rec.Timestamp, m.ttl); m.s.TTLMode == config.TTLRefresh && exp > old.e.Expiry {
			old.e.Expiry = exp
			o.entry = old.e
			o.stored = true
			m.state[id] = old
		}
	default:
		o.reason = Conflict
		o.entry, o.payloadOf = old.e, old.payload
	}
	return o
}

// scopeOf renders the scope parts, a missing one as "".
func (m *refModel) scopeOf(rec *Record) string {
	var b strings.Builder
	for _, p := range m.s.Scope {
		var v []byte
		if p.Header != "" {
			v, _ = refHeader(rec.Headers, p.Header)
		} else if json.Valid(rec.Value) {
			v, _ = refScalar(rec.Value, p.JSON)
		}
		b.WriteString(strconv.Itoa(len(v)))
		b.WriteByte(':')
		b.Write(v)
	}
	return b.String()
}

// payloadOf renders what tells a conflict from a duplicate: the value's
// bytes, or the compare fields when configured and the value is JSON.
func (m *refModel) payloadOf(rec *Record) string {
	if len(m.s.Compare) > 0 && json.Valid(rec.Value) {
		return "compare\x00" + refFields(rec.Value, m.s.Compare)
	}
	return "value\x00" + string(rec.Value)
}

// refFields renders the listed fields' values with the white space outside
// strings removed, an absent field as null.
func refFields(value []byte, fields []string) string {
	var b strings.Builder
	for _, f := range fields {
		raw, ok := refRaw(value, f)
		if !ok {
			raw = []byte("null")
		}
		var c bytes.Buffer
		if err := json.Compact(&c, raw); err != nil {
			panic("compacting valid JSON: " + err.Error())
		}
		b.WriteString(strconv.Quote(f))
		b.WriteString(strconv.Itoa(c.Len()))
		b.WriteByte(':')
		b.Write(c.Bytes())
	}
	return b.String()
}

// refHeader returns the last header named exactly name.
func refHeader(hs []Header, name string) ([]byte, bool) {
	var v []byte
	found := false
	for _, h := range hs {
		if h.Key == name {
			v, found = h.Value, true
		}
	}
	return v, found
}

// refRaw returns the raw JSON at a dotted path of a valid JSON value: a
// segment names an object member (the last of repeated names, as
// encoding/json decodes), or an array index written in canonical decimal.
func refRaw(value []byte, path string) ([]byte, bool) {
	cur := json.RawMessage(value)
	for _, seg := range strings.Split(path, ".") {
		cur = bytes.TrimLeft(cur, " \t\r\n")
		if len(cur) == 0 {
			return nil, false
		}
		switch cur[0] {
		case '{':
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(cur, &obj); err != nil {
				return nil, false
			}
			v, ok := obj[seg]
			if !ok {
				return nil, false
			}
			cur = v
		case '[':
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || strconv.Itoa(i) != seg {
				return nil, false
			}
			var arr []json.RawMessage
			if err := json.Unmarshal(cur, &arr); err != nil || i >= len(arr) {
				return nil, false
			}
			cur = arr[i]
		default:
			return nil, false
		}
	}
	return bytes.TrimSpace(cur), true
}

// refScalar returns the key text at path: a string's decoded content, a
// number's or boolean's JSON text as written; nothing for null, objects,
// arrays and absent paths.
func refScalar(value []byte, path string) ([]byte, bool) {
	raw, ok := refRaw(value, path)
	if !ok || len(raw) == 0 {
		return nil, false
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, false
		}
		return []byte(s), true
	case '{', '[', 'n':
		return nil, false
	default:
		return raw, true
	}
}

func refAddSat(a, b int64) int64 {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
