package dedup

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/kdedup/kdedup/config"
)

// Reason is the decision taken for one record (docs/decisions.md).
type Reason uint8

// The decisions. Their String forms are the reason names of docs/decisions.md, used in
// the dedup.reason header and in metrics.
const (
	FirstSeen Reason = iota
	Duplicate
	Conflict
	InvalidKey
	MissingKey
	Malformed
	numReasons
)

// NumReasons is the number of decisions: Reason values are below it, for
// arrays indexed by Reason.
const NumReasons = int(numReasons)

var reasonNames = [numReasons]string{"first_seen", "duplicate", "conflict", "invalid_key", "missing_key", "malformed"}

// String returns the reason's name (docs/decisions.md), e.g. "invalid_key".
func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("Reason(%d)", uint8(r))
}

// Reasons lists every reason in order, for metrics and summaries.
func Reasons() []Reason {
	return []Reason{FirstSeen, Duplicate, Conflict, InvalidKey, MissingKey, Malformed}
}

// ParseReason returns the reason named s.
func ParseReason(s string) (Reason, bool) {
	for r, n := range reasonNames {
		if n == s {
			return Reason(r), true
		}
	}
	return 0, false
}

// Hash identifies a key within its stream and scope: the first 16 bytes of
// SHA-256 over the stream name, the scope parts and the key, each length
// prefixed. A cryptographic hash, because keys come from callers: two
// tenants must not be able to make their keys collide.
type Hash [16]byte

// Fingerprint identifies a payload for telling a conflict from a duplicate.
type Fingerprint [16]byte

// Entry is what the state holds for a live key: when and where the key was
// first seen, until when it is live, and its payload fingerprint.
type Entry struct {
	// FirstSeen is the first-seen record's timestamp, Unix milliseconds.
	FirstSeen int64
	// Expiry ends the window: the key is live for records with timestamp <
	// Expiry (Unix milliseconds).
	Expiry int64
	// Fingerprint of the first-seen record's payload.
	Fingerprint Fingerprint
	// Topic, Partition and Offset locate the first-seen record.
	Topic     string
	Partition int32
	Offset    int64
}

// State is what the engine needs of one partition's key store. Reads must see
// the caller's own earlier Puts (two copies of a key in one batch are a
// first-seen and a duplicate).
//
// EventTime is the partition's watermark: the newest record timestamp it has
// seen, math.MinInt64 before any. A key whose Expiry + lateness is at or
// below the watermark is retired: it decides as absent, and the store may
// delete it at any time. Decisions therefore never depend on when garbage
// collection ran.
type State interface {
	Get(h Hash) (Entry, bool, error)
	Put(h Hash, e Entry) error
	EventTime() int64
	SetEventTime(ms int64)
}

// Header is a record header; the layout matches franz-go's kgo.RecordHeader.
type Header struct {
	Key   string
	Value []byte
}

// Record is the part of a Kafka record that decisions read.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	// Timestamp is the record's timestamp, Unix milliseconds: the event
	// time that windows are measured in.
	Timestamp int64
	Value     []byte
	Headers   []Header
}

// Decision is the outcome for one record.
//
// Key aliases the record's memory or the Engine's buffers: it is valid until
// the next call of Decide.
type Decision struct {
	Reason Reason
	// Key is the idempotency key as extracted: nil for missing_key and
	// malformed.
	Key []byte
	// Hash is the scoped key hash (first_seen, duplicate, conflict).
	Hash Hash
	// Entry is the key's entry after the decision: the new one for
	// first_seen, the first-seen record's for duplicate and conflict.
	Entry Entry
	// Stored reports that the decision Put Entry into the state: always for
	// first_seen, for a duplicate that extended the window under ttl_mode
	// refresh.
	Stored bool
}

// Errors of the package.
var (
	ErrConfig = errors.New("dedup: invalid stream configuration")
)

type sourceKind uint8

const (
	srcHeader sourceKind = iota
	srcJSON
	srcFields
	srcValue
)

type source struct {
	kind   sourceKind
	header string
	path   int   // srcJSON
	fields []int // srcFields: path ids in configured order
	names  [][]byte
}

type scopePart struct {
	header string
	path   int // -1 for a header part
}

// Rules is a stream's configuration compiled for deciding. It is immutable
// and shared by every Engine of the stream.
type Rules struct {
	name      string
	ttl       int64 // ms
	lateness  int64 // ms
	refresh   bool
	maxLen    int
	uuid      bool
	sources   []source
	scope     []scopePart
	compare   []int // path ids; empty: whole value
	cmpNames  [][]byte
	nameBytes []byte
	trie      pathTrie
}

// Compile checks a stream's configuration and compiles it. The configuration
// is expected to have passed config validation; Compile re-checks what the
// engine relies on.
func Compile(s config.Stream) (*Rules, error) {
	r := &Rules{
		name:     s.Name,
		ttl:      time.Duration(s.TTL).Milliseconds(),
		lateness: time.Duration(s.TTL).Milliseconds(),
		maxLen:   s.KeyMaxLength,
	}
	if s.Lateness != nil {
		r.lateness = time.Duration(*s.Lateness).Milliseconds()
	}
	var errs []error
	switch s.TTLMode {
	case "", config.TTLFixed:
	case config.TTLRefresh:
		r.refresh = true
	default:
		errs = append(errs, fmt.Errorf("ttl_mode %q", s.TTLMode))
	}
	switch s.KeyFormat {
	case "", config.KeyFormatAny:
	case config.KeyFormatUUID:
		r.uuid = true
	default:
		errs = append(errs, fmt.Errorf("key_format %q", s.KeyFormat))
	}
	if r.ttl <= 0 {
		errs = append(errs, fmt.Errorf("ttl %v: must be at least 1ms", time.Duration(s.TTL)))
	}
	if r.lateness < 0 || r.maxLen < 0 {
		errs = append(errs, errors.New("lateness and key_max_length must not be negative"))
	}
	if len(s.Key) == 0 {
		errs = append(errs, errors.New("key: no source"))
	}
	checkPath := func(p string) {
		if p == "" || strings.HasPrefix(p, ".") || strings.HasSuffix(p, ".") || strings.Contains(p, "..") {
			errs = append(errs, fmt.Errorf("JSON path %q", p))
			return
		}
		r.trie.addPath(p)
	}
	for _, k := range s.Key {
		switch {
		case k.Header != "":
		case k.JSON != "":
			checkPath(k.JSON)
		case k.Fingerprint != nil && !k.Fingerprint.Whole:
			if len(k.Fingerprint.Fields) == 0 {
				errs = append(errs, errors.New("fingerprint: no field"))
			}
			for _, f := range k.Fingerprint.Fields {
				checkPath(f)
			}
		case k.Fingerprint != nil:
		default:
			errs = append(errs, errors.New("key source with nothing set"))
		}
	}
	for _, p := range s.Scope {
		if p.JSON != "" {
			checkPath(p.JSON)
		}
	}
	for _, f := range s.Compare {
		checkPath(f)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: stream %q: %w", ErrConfig, s.Name, errors.Join(errs...))
	}
	r.trie.finish()
	for _, k := range s.Key {
		switch {
		case k.Header != "":
			r.sources = append(r.sources, source{kind: srcHeader, header: k.Header})
		case k.JSON != "":
			r.sources = append(r.sources, source{kind: srcJSON, path: r.trie.id(k.JSON)})
		case !k.Fingerprint.Whole:
			src := source{kind: srcFields}
			for _, f := range k.Fingerprint.Fields {
				src.fields = append(src.fields, r.trie.id(f))
				src.names = append(src.names, []byte(f))
			}
			r.sources = append(r.sources, src)
		default:
			r.sources = append(r.sources, source{kind: srcValue})
		}
	}
	for _, p := range s.Scope {
		if p.JSON != "" {
			r.scope = append(r.scope, scopePart{path: r.trie.id(p.JSON)})
		} else {
			r.scope = append(r.scope, scopePart{header: p.Header, path: -1})
		}
	}
	for _, f := range s.Compare {
		r.compare = append(r.compare, r.trie.id(f))
		r.cmpNames = append(r.cmpNames, []byte(f))
	}
	r.nameBytes = []byte(s.Name)
	return r, nil
}

// Name returns the stream's name.
func (r *Rules) Name() string { return r.name }

// ScopeParts returns how many parts namespace the stream's keys (its
// scope's length).
func (r *Rules) ScopeParts() int { return len(r.scope) }

// ErrScope is returned by KeyHash for more scope values than the stream
// has scope parts.
var ErrScope = errors.New("dedup: more scope values than the stream has scope parts")

// KeyHash returns the scoped hash of key in the stream, with scope the
// values of its scope parts in the order the configuration lists them
// (a missing value counts as "", as a missing part of a record does): the
// Hash a record with that key and those parts is decided under. The admin
// API looks keys up and forgets them by it.
func (r *Rules) KeyHash(key []byte, scope []string) (Hash, error) {
	if len(scope) > len(r.scope) {
		return Hash{}, fmt.Errorf("%w: %d given, %s has %d", ErrScope, len(scope), r.name, len(r.scope))
	}
	e := Engine{rules: r}
	e.writeBytes(r.nameBytes)
	e.writeLen(len(r.scope))
	for i := range r.scope {
		var v []byte
		if i < len(scope) {
			v = []byte(scope[i])
		}
		e.writeBytes(v)
	}
	e.writeBytes(key)
	var h Hash
	sum := e.digest()
	copy(h[:], sum[:])
	return h, nil
}

// Live reports whether e is live in a partition whose watermark (newest
// record timestamp) is wm: not yet retired (its expiry plus the stream's
// lateness is above wm). A record with the key and a timestamp below
// e.Expiry decides as a duplicate or a conflict of e.
func (r *Rules) Live(e Entry, wm int64) bool { return wm < addSat(e.Expiry, r.lateness) }

// TTL returns the stream's ttl: a key stored for a record of timestamp t
// expires at t + TTL at the latest (ttl_mode refresh moves it to a later
// record's timestamp + TTL).
func (r *Rules) TTL() time.Duration { return time.Duration(r.ttl) * time.Millisecond }

// Lateness returns how long past its expiry, in the partition's event time,
// a key is kept: the state store indexes retirement by it.
func (r *Rules) Lateness() time.Duration { return time.Duration(r.lateness) * time.Millisecond }

// Engine decides the records of one stream. It is not safe for concurrent
// use: it reuses its buffers from record to record, which is what keeps a
// decision free of heap allocations. Use one Engine per goroutine; they are
// cheap (NewEngine shares the compiled Rules).
type Engine struct {
	rules    *Rules
	doc      jsonDoc
	hbuf     []byte // what the next digest hashes: one sha256.Sum256 call, not a Write per part
	fpkey    [len(fpPrefix) + 2*16]byte
	keybuf   []byte // unescaped JSON keys
	scopebuf []byte // unescaped JSON scope parts
}

const fpPrefix = "fp:"

// NewEngine returns an engine deciding by rules.
func NewEngine(rules *Rules) *Engine {
	return &Engine{
		rules: rules,
		doc:   jsonDoc{trie: &rules.trie},
	}
}

// Rules returns the engine's compiled rules.
func (e *Engine) Rules() *Rules { return e.rules }

// Decide decides rec against st and records the outcome in st: a
// first-seen key (or a refreshed window) is Put, and the partition's event
// time advances to rec's timestamp. An error comes only from st.
func (e *Engine) Decide(st State, rec *Record) (Decision, error) {
	r := e.rules
	e.doc.reset(rec.Value)
	wm := st.EventTime()
	if rec.Timestamp > wm {
		st.SetEventTime(rec.Timestamp)
	}

	key, sawInvalidJSON := e.extractKey(rec)
	if key == nil {
		if sawInvalidJSON {
			return Decision{Reason: Malformed}, nil
		}
		return Decision{Reason: MissingKey}, nil
	}
	if (r.maxLen > 0 && len(key) > r.maxLen) || (r.uuid && !isUUID(key)) {
		return Decision{Reason: InvalidKey, Key: key}, nil
	}
	d := Decision{Key: key, Hash: e.keyHash(rec, key)}
	old, ok, err := st.Get(d.Hash)
	if err != nil {
		return Decision{}, fmt.Errorf("looking up key of %s/%d/%d: %w", rec.Topic, rec.Partition, rec.Offset, err)
	}
	fp := e.payloadFingerprint(rec)
	live := ok && rec.Timestamp < old.Expiry && wm < addSat(old.Expiry, r.lateness)
	switch {
	case !live:
		d.Reason = FirstSeen
		d.Entry = Entry{
			FirstSeen:   rec.Timestamp,
			Expiry:      addSat(rec.Timestamp, r.ttl),
			Fingerprint: fp,
			Topic:       rec.Topic,
			Partition:   rec.Partition,
			Offset:      rec.Offset,
		}
		d.Stored = true
	case fp == old.Fingerprint:
		d.Reason = Duplicate
		d.Entry = old
		if exp := addSat(rec.Timestamp, r.ttl); r.refresh && exp > old.Expiry {
			d.Entry.Expiry = exp
			d.Stored = true
		}
	default:
		d.Reason = Conflict
		d.Entry = old
	}
	if d.Stored {
		if err := st.Put(d.Hash, d.Entry); err != nil {
			return Decision{}, fmt.Errorf("storing key of %s/%d/%d: %w", rec.Topic, rec.Partition, rec.Offset, err)
		}
	}
	return d, nil
}

// Route returns the scoped key hash of rec when rec has a valid key: what
// the optional repartition step partitions by, so that every copy of a
// key reaches the same partition. ok is false for a record whose key is
// missing, malformed or invalid; it will be audited wherever it goes.
// Route reads no state.
func (e *Engine) Route(rec *Record) (h Hash, ok bool) {
	r := e.rules
	e.doc.reset(rec.Value)
	key, _ := e.extractKey(rec)
	if key == nil || (r.maxLen > 0 && len(key) > r.maxLen) || (r.uuid && !isUUID(key)) {
		return h, false
	}
	return e.keyHash(rec, key), true
}

// addSat returns a+b (b >= 0), saturating at the int64 range.
func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// extractKey tries the sources in order and returns the first non-empty
// key, or nil and whether a JSON source or field fingerprint met a value
// that is not valid JSON.
func (e *Engine) extractKey(rec *Record) (key []byte, sawInvalidJSON bool) {
	for i := range e.rules.sources {
		s := &e.rules.sources[i]
		switch s.kind {
		case srcHeader:
			if v, ok := lastHeader(rec.Headers, s.header); ok && len(v) > 0 {
				return v, false
			}
		case srcJSON:
			if !e.doc.parse() {
				sawInvalidJSON = true
				continue
			}
			if k := e.scalar(s.path, &e.keybuf); len(k) > 0 {
				return k, false
			}
		case srcFields:
			if !e.doc.parse() {
				sawInvalidJSON = true
				continue
			}
			e.hbuf = e.hbuf[:0]
			e.writeBytes(tagFields)
			e.hashFields(s.fields, s.names)
			return e.fingerprintKey(), false
		case srcValue:
			e.hbuf = e.hbuf[:0]
			e.writeBytes(tagValue)
			e.write(rec.Value)
			return e.fingerprintKey(), false
		}
	}
	return nil, sawInvalidJSON
}

// scalar returns the key text of path id: a string's decoded content
// (decoded into *buf when it has escapes), a number's or boolean's JSON
// text as written; nothing for null, objects, arrays and absent paths.
func (e *Engine) scalar(id int, buf *[]byte) []byte {
	raw, ok := e.doc.get(id)
	if !ok {
		return nil
	}
	switch raw[0] {
	case '"':
		if !needsUnquote(raw) {
			return raw[1 : len(raw)-1]
		}
		*buf = unquoteInto((*buf)[:0], raw)
		return *buf
	case '{', '[', 'n':
		return nil
	default:
		return raw
	}
}

// fingerprintKey renders the digest as "fp:" + 32 hex digits.
func (e *Engine) fingerprintKey() []byte {
	sum := e.digest()
	copy(e.fpkey[:], fpPrefix)
	hex.Encode(e.fpkey[len(fpPrefix):], sum[:16])
	return e.fpkey[:]
}

// hashFields writes each field's name and compacted JSON value to the
// digest; an absent field hashes like null.
func (e *Engine) hashFields(ids []int, names [][]byte) {
	for i, id := range ids {
		e.writeBytes(names[i])
		raw, ok := e.doc.get(id)
		if !ok {
			raw = nullJSON
		}
		e.writeCompact(raw)
	}
}

// Byte forms of what the digests are fed, made once: a string converted at
// the call of an interface method would be copied to the heap every time.
var (
	nullJSON   = []byte("null")
	tagFields  = []byte("fields")
	tagValue   = []byte("value")
	tagCompare = []byte("compare")
)

// writeCompact writes valid JSON to the digest without the white space
// outside strings, length prefixed, so that re-formatted copies of an
// event fingerprint alike.
func (e *Engine) writeCompact(raw []byte) {
	n := 0
	for i := 0; i < len(raw); i++ {
		switch raw[i] {
		case ' ', '\t', '\n', '\r':
		case '"':
			j := scanString(raw, i)
			n += j - i
			i = j - 1
		default:
			n++
		}
	}
	e.writeLen(n)
	start := 0
	for i := 0; i < len(raw); i++ {
		switch raw[i] {
		case ' ', '\t', '\n', '\r':
			e.write(raw[start:i])
			start = i + 1
		case '"':
			i = scanString(raw, i) - 1
		}
	}
	e.write(raw[start:])
}

// write adds b to what the next digest hashes.
func (e *Engine) write(b []byte) { e.hbuf = append(e.hbuf, b...) }

func (e *Engine) writeLen(n int) {
	e.hbuf = binary.AppendUvarint(e.hbuf, uint64(n))
}

func (e *Engine) writeBytes(b []byte) {
	e.writeLen(len(b))
	e.write(b)
}

// maxKeptHashBuf bounds the hash buffer an engine keeps between records:
// one huge value must not pin its size for the engine's life.
const maxKeptHashBuf = 64 << 10

// digest returns the SHA-256 of what was written since the buffer was
// last emptied: the same bytes in the same order as a streaming digest
// fed part by part, in one call.
func (e *Engine) digest() [sha256.Size]byte {
	sum := sha256.Sum256(e.hbuf)
	if cap(e.hbuf) > maxKeptHashBuf {
		e.hbuf = nil
	}
	return sum
}

// keyHash hashes the stream name, the scope parts and the key.
func (e *Engine) keyHash(rec *Record, key []byte) Hash {
	r := e.rules
	e.hbuf = e.hbuf[:0]
	e.writeBytes(r.nameBytes)
	e.writeLen(len(r.scope))
	for _, p := range r.scope {
		if p.path < 0 {
			v, _ := lastHeader(rec.Headers, p.header)
			e.writeBytes(v)
			continue
		}
		// A JSON scope part reads the value as a key does, except that
		// what yields nothing counts as "". Its own buffer keeps a key
		// held in keybuf intact.
		e.writeBytes(e.scalar(p.path, &e.scopebuf))
	}
	e.writeBytes(key)
	var h Hash
	sum := e.digest()
	copy(h[:], sum[:])
	return h
}

// payloadFingerprint fingerprints what tells a conflict from a duplicate:
// the value's bytes, or the compare fields when configured and the value is
// valid JSON.
func (e *Engine) payloadFingerprint(rec *Record) Fingerprint {
	e.hbuf = e.hbuf[:0]
	if len(e.rules.compare) > 0 && e.doc.parse() {
		e.writeBytes(tagCompare)
		e.hashFields(e.rules.compare, e.rules.cmpNames)
	} else {
		e.writeBytes(tagValue)
		e.write(rec.Value)
	}
	var fp Fingerprint
	sum := e.digest()
	copy(fp[:], sum[:])
	return fp
}

// lastHeader returns the value of the last header named name (exact,
// case-sensitive match).
func lastHeader(hs []Header, name string) ([]byte, bool) {
	for i := len(hs) - 1; i >= 0; i-- {
		if hs[i].Key == name {
			return hs[i].Value, true
		}
	}
	return nil, false
}

// isUUID checks the 8-4-4-4-12 hex-digit shape, either case; not the
// version bits.
func isUUID(k []byte) bool {
	if len(k) != 36 {
		return false
	}
	for i, c := range k {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !isHex(c) {
				return false
			}
		}
	}
	return true
}
