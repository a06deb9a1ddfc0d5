// Package e2e is the end-to-end harness of kdedup's tests: a workload of
// push and order events with every kind of decision, an independent model of
// docs/decisions.md that says what each input record must become, and a checker
// that reads the output and audit topics under read_committed and compares
// them with the model record by record.
//
// The model shares no code with package dedup: it parses JSON with
// encoding/json and keeps plain maps, so that a bug in the engine cannot
// hide in the oracle.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Stream settings of the test configuration (Topics.Config). Push has an
// explicit lateness shorter than its ttl (keys retire early, see
// Model.DecideAt) and a third key source, a field fingerprint; order runs
// under ttl_mode: refresh with the default lateness (its ttl) and tells a
// conflict from a duplicate by the compare fields only.
const (
	PushTTL      = 10 * time.Minute
	PushLateness = 2 * time.Minute
	OrderTTL     = 20 * time.Minute
	Partitions   = 3
)

// The fingerprint fields of push's third key source and order's compare
// fields.
var (
	PushFingerprint = []string{"user_id", "template_id", "body"}
	OrderCompare    = []string{"amount", "currency"}
)

// Topics names one test's topics and consumer group. On a fresh in-process
// cluster the prefix is empty; tests sharing one real cluster give each
// test its own prefix, so that no test reads another's records, offsets or
// transactions.
type Topics struct {
	Prefix      string
	PushInput   string
	PushOutput  string
	OrderInput  string
	OrderOutput string
	Audit       string
	Group       string
	// Repartition turns the repartition step on for both streams
	// (Config); PushRepartition and OrderRepartition are their topics.
	Repartition                       bool
	PushRepartition, OrderRepartition string
}

// NewTopics returns the names under prefix: prefix+"push-events" and so on.
func NewTopics(prefix string) *Topics {
	return &Topics{
		Prefix:      prefix,
		PushInput:   prefix + "push-events",
		PushOutput:  prefix + "push-events.deduped",
		OrderInput:  prefix + "order-events",
		OrderOutput: prefix + "order-events.deduped",
		Audit:       prefix + "dedup.audit",
		Group:       prefix + "e2e",
	}
}

// Repartitioned returns tp with the repartition step on.
func (tp *Topics) Repartitioned() *Topics {
	c := *tp
	c.Repartition = true
	c.PushRepartition = c.Group + ".push.repartition"
	c.OrderRepartition = c.Group + ".order.repartition"
	return &c
}

// Inputs returns the input topics.
func (tp *Topics) Inputs() []string { return []string{tp.PushInput, tp.OrderInput} }

// Decided returns the topics every input ends in: outputs and audit.
func (tp *Topics) Decided() []string { return []string{tp.PushOutput, tp.OrderOutput, tp.Audit} }

// Config returns the YAML configuration the tests run kdedup with: push
// keyed by header, body field or a fingerprint of three body fields under
// a tenant header, with an explicit lateness; orders keyed by UUID under a
// tenant field, in refresh mode, with compare fields.
func (tp *Topics) Config(brokers []string, stateDir, instance string, extra string) string {
	b := ""
	if len(brokers) > 0 {
		b = "brokers: [" + strings.Join(brokers, ", ") + "]\n"
	}
	return b + fmt.Sprintf(`group: %s
instance_id: %s
state_dir: %s
audit_topic: %s
commit_interval: 50ms
`, tp.Group, instance, stateDir, tp.Audit) + tp.StreamsYAML() + extra
}

// StreamsYAML returns the streams section of Config (from "streams:" on):
// what the tests and kdedup bench run kdedup with. Topic names are
// quoted (YAML double-quoted strings are Go's).
func (tp *Topics) StreamsYAML() string {
	q := strconv.Quote
	return fmt.Sprintf(`streams:
  - name: push
    input: %s
    output: %s
    ttl: %v
    lateness: %v
    key:
      - header: Idempotency-Key
      - json: data.resubmitCheckKey
      - fingerprint: [%s]
    scope: [header:tenant-id]
    key_max_length: 64
    repartition: %v
  - name: order
    input: %s
    output: %s
    ttl: %v
    ttl_mode: refresh
    key:
      - header: X-Client-Token
      - json: order_id
    scope: [json:tenant_id]
    key_format: uuid
    compare: [%s]
    repartition: %v
`, q(tp.PushInput), q(tp.PushOutput), PushTTL, PushLateness, strings.Join(PushFingerprint, ", "), tp.Repartition,
		q(tp.OrderInput), q(tp.OrderOutput), OrderTTL, strings.Join(OrderCompare, ", "), tp.Repartition)
}

// Workload generates events. It is deterministic for a seed.
type Workload struct {
	tp    *Topics
	rng   *rand.Rand
	clock time.Time
	sent  []*kgo.Record // first copies, for re-sending
	n     int
}

// NewWorkload starts a workload of n events on tp's inputs. Its event
// times advance 1.1s a record on average and end about an hour before now:
// Apache Kafka 4 refuses timestamps more than an hour ahead of its clock
// (message.timestamp.after.max.ms), kfake none.
func (tp *Topics) NewWorkload(seed uint64, n int) *Workload {
	start := time.Now().Add(-time.Hour - time.Duration(n)*2*time.Second)
	return &Workload{tp: tp, rng: rand.New(rand.NewPCG(seed, 0xdeadbeef)), clock: start}
}

// NewWorkloadEnding starts a workload of n events whose event times end
// near end (within minutes: the clock advances 1.1s an event on average,
// at random), so that events stamped from end on continue it without a
// jump of event time: a jump would retire, in one burst, every key the
// workload stored.
func (tp *Topics) NewWorkloadEnding(seed uint64, n int, end time.Time) *Workload {
	start := end.Add(-time.Duration(n) * 1100 * time.Millisecond)
	return &Workload{tp: tp, rng: rand.New(rand.NewPCG(seed, 0xdeadbeef)), clock: start}
}

// Next returns the next event: a new push or order event, an exact copy of
// a recent one, a conflicting reuse of its key (for order: a change of a
// compare field; a change elsewhere is a duplicate there), a copy with its
// JSON re-formatted, a re-send after the ttl, a copy at the edge of its
// window or arriving late, the same key under another tenant, an over-long
// or non-UUID key, a push event keyed by its fingerprint only, an order
// whose key is null or empty, an order keyed by header whose value is not
// JSON, or a value that is not JSON with no key.
func (w *Workload) Next() *kgo.Record {
	w.n++
	w.clock = w.clock.Add(time.Duration(200+w.rng.IntN(1800)) * time.Millisecond)
	p := w.rng.IntN(100)
	if len(w.sent) > 0 && p < 45 {
		orig := w.sent[len(w.sent)-1-w.rng.IntN(min(len(w.sent), 300))]
		r := clone(orig)
		r.Timestamp = w.clock
		ttl := PushTTL
		if r.Topic == w.tp.OrderInput {
			ttl = OrderTTL
		}
		switch {
		case p < 22: // exact copy
		case p < 27: // same key, other payload
			switch {
			case r.Topic == w.tp.OrderInput && w.rng.IntN(2) == 0:
				// Another amount: a compare field, so a conflict.
				r.Value = bytes.Replace(r.Value, []byte(`"amount":`), []byte(`"amount":9`), 1)
			case r.Topic == w.tp.PushInput && !bytes.Contains(r.Value, []byte(`"template_id"`)):
				// An absent fingerprint field made explicit null: the
				// same fingerprint key, other bytes.
				r.Value = bytes.Replace(r.Value, []byte(`{`), []byte(`{"template_id":null,`), 1)
			default:
				// A field outside order's compare fields: there a
				// duplicate, on push a conflict.
				r.Value = append(bytes.TrimSuffix(r.Value, []byte("}")), []byte(fmt.Sprintf(`,"retry":%d}`, w.n))...)
			}
		case p < 30: // the same JSON re-formatted: white space outside strings
			// (no workload string holds `,"` or `":`).
			v := bytes.ReplaceAll(r.Value, []byte(`,"`), []byte(`, "`))
			v = bytes.ReplaceAll(v, []byte(`":`), []byte(`": `))
			r.Value = append(append([]byte(" "), v...), '\n')
		case p < 35: // re-sent after the key's ttl: first-seen again
			// (unless a refresh moved the window)
			r.Timestamp = orig.Timestamp.Add(ttl + time.Second)
			if r.Timestamp.Before(w.clock) {
				r.Timestamp = w.clock
			}
		case p < 38: // at the edge of the first copy's window: the last
			// millisecond inside it or the first outside
			r.Timestamp = orig.Timestamp.Add(ttl - time.Duration(w.rng.IntN(2))*time.Millisecond)
		case p < 41: // late: up to four minutes behind the clock
			r.Timestamp = w.clock.Add(-time.Duration(w.rng.IntN(240_000)) * time.Millisecond)
		default: // the same key under another tenant
			if r.Topic == w.tp.PushInput {
				setHeader(r, "tenant-id", fmt.Sprintf("tenant-%d", 100+w.rng.IntN(3)))
			} else {
				r.Value = bytes.Replace(r.Value, []byte(`"tenant_id":"`), []byte(`"tenant_id":"x`), 1)
			}
		}
		return r
	}
	tenant := fmt.Sprintf("tenant-%d", w.rng.IntN(4))
	var r *kgo.Record
	if w.rng.IntN(2) == 0 {
		key := fmt.Sprintf("push-%d-%d", w.n, w.rng.IntN(1e9))
		body := fmt.Sprintf(`{"user_id":%d,"template_id":"welcome","body":"hello %d"`, w.rng.IntN(1000), w.n)
		r = &kgo.Record{Topic: w.tp.PushInput, Key: []byte(key), Headers: []kgo.RecordHeader{{Key: "tenant-id", Value: []byte(tenant)}}}
		switch q := w.rng.IntN(100); {
		case q < 45:
			setHeader(r, "Idempotency-Key", key)
			r.Value = []byte(body + "}")
		case q < 78:
			r.Value = []byte(body + `,"data":{"resubmitCheckKey":"` + key + `"}}`)
		case q < 84:
			long := strings.Repeat("k", 65) + key // invalid_key: over 64 bytes
			setHeader(r, "Idempotency-Key", long)
			r.Key = []byte(long)
			r.Value = []byte(body + "}")
		case q < 90: // no header, no JSON key: the fingerprint
			r.Value = []byte(body + "}")
		case q < 93: // an empty JSON key yields nothing: the fingerprint
			r.Value = []byte(body + `,"data":{"resubmitCheckKey":""}}`)
		case q < 96: // the fingerprint, of an absent field too (hashed as null)
			r.Value = []byte(fmt.Sprintf(`{"user_id":%d,"body":"hi %d"}`, w.rng.IntN(1000), w.n))
		default:
			r.Value = []byte(body) // malformed: not JSON, no header
		}
	} else {
		id := fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", w.rng.Uint32(), w.rng.IntN(1<<16), w.rng.IntN(1<<12), w.rng.IntN(1<<12), w.rng.Uint64()&(1<<48-1))
		r = &kgo.Record{Topic: w.tp.OrderInput, Key: []byte(id)}
		body := fmt.Sprintf(`{"tenant_id":"%s","amount":%d,"currency":"EUR"`, tenant, w.rng.IntN(10000))
		switch q := w.rng.IntN(100); {
		case q < 42:
			setHeader(r, "X-Client-Token", id)
			r.Value = []byte(body + "}")
		case q < 82:
			r.Value = []byte(body + `,"order_id":"` + id + `"}`)
		case q < 88:
			r.Value = []byte(body + `,"order_id":"order-` + strconv.Itoa(w.n) + `"}`) // invalid_key: not a UUID
			r.Key = []byte("order-" + strconv.Itoa(w.n))
		case q < 91:
			r.Value = []byte(body + `,"order_id":null}`) // missing_key
		case q < 93:
			r.Value = []byte(body + `,"order_id":""}`) // missing_key
		case q < 96: // keyed by header, compared by its bytes: not JSON
			setHeader(r, "X-Client-Token", id)
			r.Value = []byte(body)
		default:
			r.Value = []byte(`{"tenant_id":` + tenant) // malformed
		}
	}
	r.Timestamp = w.clock
	w.sent = append(w.sent, r)
	if len(w.sent) > 2000 {
		w.sent = w.sent[1000:]
	}
	return clone(r)
}

func clone(r *kgo.Record) *kgo.Record {
	c := &kgo.Record{Topic: r.Topic, Key: r.Key, Value: append([]byte(nil), r.Value...), Timestamp: r.Timestamp}
	c.Headers = append([]kgo.RecordHeader(nil), r.Headers...)
	return c
}

func setHeader(r *kgo.Record, k, v string) {
	for i := range r.Headers {
		if r.Headers[i].Key == k {
			r.Headers[i].Value = []byte(v)
			return
		}
	}
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
}

// Expect is what the model says one input record must become.
type Expect struct {
	Reason  string // first_seen, duplicate, ...
	Key     string // dedup.key; "" when missing or a fingerprint
	First   string // dedup.first for duplicate and conflict
	FirstTS int64
	// FP is, for a key that is a fingerprint, what the model hashes (the
	// fields' compacted JSON): kdedup's dedup.key for it is "fp:" and 32
	// hex digits, the same for the same FP and different for different
	// ones (checked across the run, not recomputed: the model does not
	// copy kdedup's hash).
	FP     string
	Stream string // dedup.stream
	id     string // the scoped key, for a valid key
	input  *kgo.Record
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

type modelEntry struct {
	first   string
	firstTS int64
	expiry  int64
	payload string // what tells a conflict from a duplicate
	value   string // the first-seen record's value bytes
}

type partModel struct {
	keys map[string]*modelEntry
	wm   int64
}

// streamModel is one stream of Config, as plain data.
type streamModel struct {
	name, header, jsonPath string
	fingerprint            []string // fields; nil: no fingerprint source
	scopeHeader, scopeJSON string
	ttl, lateness          int64 // ms
	refresh                bool
	compare                []string
	maxLen                 int
	uuid                   bool
}

// Model decides input records as docs/decisions.md and the configuration
// reference say, for Config's two streams, in each partition's offset
// order.
type Model struct {
	tp      *Topics
	parts   map[string]*partModel
	streams map[string]*streamModel
	// Exercised counts decisions that only the less common settings make,
	// so that a test can require the workload to reach them.
	Exercised map[string]int
}

// The Exercised counters.
const (
	// ExFingerprint: a first_seen, duplicate or conflict keyed by a
	// fingerprint.
	ExFingerprint = "fingerprint"
	// ExRetired: first_seen although the record is inside its key's
	// window: the watermark passed expiry + lateness.
	ExRetired = "retired_by_lateness"
	// ExRefreshed: a duplicate that moved its key's expiry (ttl_mode:
	// refresh).
	ExRefreshed = "refreshed"
	// ExKeptLive: a duplicate or conflict past first-seen + ttl, live only
	// because a refresh moved the expiry.
	ExKeptLive = "kept_live_by_refresh"
	// ExCompared: a duplicate whose value bytes differ from the
	// first-seen record's (the compare fields are equal).
	ExCompared = "duplicate_by_compare"
	// ExEdge: a record at the last millisecond of its key's window or the
	// first outside it.
	ExEdge = "window_edge"
)

// NewModel returns an empty model of tp's streams.
func (tp *Topics) NewModel() *Model {
	return &Model{tp: tp, parts: map[string]*partModel{}, Exercised: map[string]int{}, streams: map[string]*streamModel{
		tp.PushInput: {name: "push", header: "Idempotency-Key", jsonPath: "data.resubmitCheckKey", fingerprint: PushFingerprint,
			scopeHeader: "tenant-id", ttl: PushTTL.Milliseconds(), lateness: PushLateness.Milliseconds(), maxLen: 64},
		tp.OrderInput: {name: "order", header: "X-Client-Token", jsonPath: "order_id", scopeJSON: "tenant_id",
			ttl: OrderTTL.Milliseconds(), lateness: OrderTTL.Milliseconds(), refresh: true, compare: OrderCompare, uuid: true},
	}}
}

func header(r *kgo.Record, k string) (string, bool) {
	v, ok := "", false
	for _, h := range r.Headers {
		if h.Key == k {
			v, ok = string(h.Value), true
		}
	}
	return v, ok
}

// jsonKey is a JSON source: (key, yielded, valueWasJSON).
func jsonKey(value []byte, path string) (string, bool, bool) {
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() || !json.Valid(value) {
		return "", false, false
	}
	for _, seg := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return "", false, true
		}
		if v, ok = m[seg]; !ok {
			return "", false, true
		}
	}
	switch x := v.(type) {
	case string:
		return x, x != "", true
	case json.Number:
		return x.String(), true, true
	case bool:
		return strconv.FormatBool(x), true, true
	}
	return "", false, true
}

// fields renders the JSON values at paths of a valid JSON value, each
// compacted (white space outside strings removed) and named, an absent
// one as null: what a field fingerprint and the compare fields stand for.
func fields(value []byte, paths []string) string {
	var b strings.Builder
	for _, path := range paths {
		raw := json.RawMessage(value)
		for _, seg := range strings.Split(path, ".") {
			var m map[string]json.RawMessage
			if json.Unmarshal(raw, &m) != nil || m[seg] == nil {
				raw = json.RawMessage("null")
				break
			}
			raw = m[seg]
		}
		var c bytes.Buffer
		if err := json.Compact(&c, raw); err != nil {
			panic(fmt.Sprintf("compacting %q of valid JSON: %v", raw, err))
		}
		fmt.Fprintf(&b, "%q=%s;", path, c.Bytes())
	}
	return b.String()
}

// fpKeyLen is the length of a fingerprint key: "fp:" and 32 hex digits.
const fpKeyLen = 35

// Decide returns what input record r (with its offset) must become.
func (m *Model) Decide(r *kgo.Record) Expect {
	return m.DecideAt(r, fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset))
}

// DecideAt is Decide for a record whose own coordinates are src: with
// the repartition step, r is the repartitioned copy (its partition the
// state's) and src the input record it stands for.
//
// A key is live for a record when it was first seen, ts < its expiry, and
// the partition's watermark before this record (the newest timestamp
// seen) is below expiry + lateness; otherwise the record is first_seen
// and replaces the entry. Under refresh a duplicate moves the expiry to
// its own ts + ttl, never backwards; a conflict does not.
func (m *Model) DecideAt(r *kgo.Record, src string) Expect {
	pk := fmt.Sprintf("%s/%d", r.Topic, r.Partition)
	pm := m.parts[pk]
	if pm == nil {
		pm = &partModel{keys: map[string]*modelEntry{}, wm: math.MinInt64}
		m.parts[pk] = pm
	}
	s := m.streams[r.Topic]
	ts := r.Timestamp.UnixMilli()
	wm := pm.wm
	pm.wm = max(pm.wm, ts)

	var scope string
	if s.scopeHeader != "" {
		scope, _ = header(r, s.scopeHeader)
	} else if t, ok, _ := jsonKey(r.Value, s.scopeJSON); ok {
		scope = t
	}
	isJSON := json.Valid(r.Value)
	key, ok := header(r, s.header)
	ok = ok && key != ""
	sawBad, fp := false, ""
	if !ok {
		key, ok, _ = jsonKey(r.Value, s.jsonPath)
		sawBad = !isJSON
	}
	if !ok && s.fingerprint != nil {
		if isJSON {
			fp, ok = fields(r.Value, s.fingerprint), true
		}
	}
	klen := len(key)
	if fp != "" {
		key, klen = "", fpKeyLen
	}
	switch {
	case !ok && sawBad:
		return Expect{Reason: "malformed", Stream: s.name}
	case !ok:
		return Expect{Reason: "missing_key", Stream: s.name}
	case s.maxLen > 0 && klen > s.maxLen, s.uuid && (fp != "" || !uuidRE.MatchString(key)):
		return Expect{Reason: "invalid_key", Key: key, FP: fp, Stream: s.name}
	}
	payload := "value:" + string(r.Value)
	if len(s.compare) > 0 && isJSON {
		payload = "compare:" + fields(r.Value, s.compare)
	}
	id := scope + "\x00" + key
	if fp != "" {
		id = scope + "\x01" + fp
		m.Exercised[ExFingerprint]++
	}
	e := pm.keys[id]
	if e != nil && (ts == e.expiry || ts == e.expiry-1) {
		m.Exercised[ExEdge]++
	}
	if e == nil || ts >= e.expiry || wm >= e.expiry+s.lateness {
		if e != nil && ts < e.expiry {
			m.Exercised[ExRetired]++
		}
		pm.keys[id] = &modelEntry{first: src, firstTS: ts, expiry: ts + s.ttl, payload: payload, value: string(r.Value)}
		return Expect{Reason: "first_seen", Key: key, FP: fp, Stream: s.name, id: id}
	}
	if ts >= e.firstTS+s.ttl {
		m.Exercised[ExKeptLive]++
	}
	reason := "duplicate"
	if e.payload != payload {
		reason = "conflict"
	} else {
		if e.value != string(r.Value) {
			m.Exercised[ExCompared]++
		}
		if s.refresh && ts+s.ttl > e.expiry {
			e.expiry = ts + s.ttl
			m.Exercised[ExRefreshed]++
		}
	}
	return Expect{Reason: reason, Key: key, FP: fp, First: e.first, FirstTS: e.firstTS, Stream: s.name, id: id}
}

// ReadAll reads the committed records of topics (read_committed) until at
// least want have arrived and then nothing more arrives for quiet, so that
// records beyond want (duplicates) are read too. It returns what it has
// when ctx ends.
// conn holds the client options that reach the cluster (seed brokers,
// security).
func ReadAll(ctx context.Context, conn []kgo.Opt, want int, quiet time.Duration, topics ...string) ([]*kgo.Record, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.ConsumeTopics(topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, conn...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var out []*kgo.Record
	for {
		pctx := ctx
		cancel := context.CancelFunc(func() {})
		if len(out) >= want {
			pctx, cancel = context.WithTimeout(ctx, quiet)
		}
		fs := cl.PollFetches(pctx)
		cancel()
		recs := fs.Records()
		out = append(out, recs...)
		if ctx.Err() != nil {
			return out, fmt.Errorf("reading %v: %d of %d records: %w", topics, len(out), want, ctx.Err())
		}
		if len(out) >= want && len(recs) == 0 && pctx.Err() != nil {
			return out, nil
		}
	}
}

// Report is the result of Check.
type Report struct {
	Inputs, FirstSeen, Audited int
	ByReason                   map[string]int
	// Exercised is the model's Exercised counters: how often the workload
	// reached the less common settings.
	Exercised               map[string]int
	Lost, Duplicated, Wrong int
	Problems                []string
}

func (r *Report) problem(format string, args ...any) {
	if len(r.Problems) < 20 {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

// OK reports whether the run was exactly once and every decision right.
func (r *Report) OK() bool {
	return r.Lost == 0 && r.Duplicated == 0 && r.Wrong == 0 && len(r.Problems) == 0
}

func (r *Report) String() string {
	reasons := make([]string, 0, len(r.ByReason))
	for k, v := range r.ByReason {
		reasons = append(reasons, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(reasons)
	exercised := make([]string, 0, len(r.Exercised))
	for k, v := range r.Exercised {
		exercised = append(exercised, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(exercised)
	s := fmt.Sprintf("inputs=%d first_seen=%d audited=%d [%s] {%s} lost=%d duplicated=%d wrong=%d",
		r.Inputs, r.FirstSeen, r.Audited, strings.Join(reasons, " "), strings.Join(exercised, " "), r.Lost, r.Duplicated, r.Wrong)
	for _, p := range r.Problems {
		s += "\n  " + p
	}
	return s
}

// Check compares inputs (as read back, with offsets) with outputs and
// audits: every first-seen input exactly once in its output, in input
// order, byte-identical; every other input exactly once in the audit with
// the model's reason, key and first-seen coordinates.
func (tp *Topics) Check(inputs, outputs, audits []*kgo.Record) *Report {
	rep := &Report{ByReason: map[string]int{}, Inputs: len(inputs)}
	sort.Slice(inputs, func(i, j int) bool {
		if inputs[i].Topic != inputs[j].Topic {
			return inputs[i].Topic < inputs[j].Topic
		}
		if inputs[i].Partition != inputs[j].Partition {
			return inputs[i].Partition < inputs[j].Partition
		}
		return inputs[i].Offset < inputs[j].Offset
	})
	m := tp.NewModel()
	wantOut := map[string][]*kgo.Record{} // output topic/partition -> expected records in order
	wantAudit := map[string]Expect{}      // source coordinates -> expectation
	for _, in := range inputs {
		e := m.Decide(in)
		rep.ByReason[e.Reason]++
		src := fmt.Sprintf("%s/%d/%d", in.Topic, in.Partition, in.Offset)
		if e.Reason == "first_seen" {
			out := tp.PushOutput
			if in.Topic == tp.OrderInput {
				out = tp.OrderOutput
			}
			k := fmt.Sprintf("%s/%d", out, in.Partition)
			wantOut[k] = append(wantOut[k], in)
			rep.FirstSeen++
		} else {
			e.input = in
			wantAudit[src] = e
			rep.Audited++
		}
	}
	rep.Exercised = m.Exercised
	gotOut := map[string][]*kgo.Record{}
	for _, o := range outputs {
		k := fmt.Sprintf("%s/%d", o.Topic, o.Partition)
		gotOut[k] = append(gotOut[k], o)
	}
	for k, want := range wantOut {
		got := gotOut[k]
		sort.Slice(got, func(i, j int) bool { return got[i].Offset < got[j].Offset })
		i, j := 0, 0
		emitted := map[string]bool{} // outputs matched so far, by content
		for i < len(want) && j < len(got) {
			if sameRecord(want[i], got[j]) {
				emitted[signature(got[j])] = true
				i++
				j++
				continue
			}
			// An output that is not the next expected one: a re-emission
			// of an earlier one, or something that should not be there.
			if emitted[signature(got[j])] {
				rep.Duplicated++
				rep.problem("%s: output offset %d (%q) emitted again", k, got[j].Offset, got[j].Value)
				j++
				continue
			}
			if containsFrom(got, j, want[i]) {
				rep.Wrong++
				rep.problem("%s: output offset %d (%q) is not a first-seen record", k, got[j].Offset, got[j].Value)
				j++
				continue
			}
			rep.Lost++
			rep.problem("%s: first-seen input %s/%d/%d (%q) missing from the output", k, want[i].Topic, want[i].Partition, want[i].Offset, want[i].Value)
			i++
		}
		for ; i < len(want); i++ {
			rep.Lost++
			rep.problem("%s: first-seen input %s/%d/%d (%q) missing from the output", k, want[i].Topic, want[i].Partition, want[i].Offset, want[i].Value)
		}
		for ; j < len(got); j++ {
			if emitted[signature(got[j])] {
				rep.Duplicated++
				rep.problem("%s: output offset %d (%q) emitted again", k, got[j].Offset, got[j].Value)
			} else {
				rep.Wrong++
				rep.problem("%s: extra output offset %d (%q)", k, got[j].Offset, got[j].Value)
			}
		}
		delete(gotOut, k)
	}
	for k, got := range gotOut {
		rep.Wrong += len(got)
		rep.problem("%s: %d output records where none were expected", k, len(got))
	}
	rep.checkAudits(audits, wantAudit)
	return rep
}

// checkAudits compares audit records with the model's expectations, by
// source coordinates: the dedup.* headers with the model's decision, and
// the rest (key, value, timestamp, the other headers in order) with the
// input record at dedup.source, which an audit record must carry
// unchanged. A fingerprint key must be "fp:" and 32 hex digits, one per
// fingerprinted content and scope-free: the same model fingerprint always
// the same dedup.key, different ones different keys.
func (rep *Report) checkAudits(audits []*kgo.Record, wantAudit map[string]Expect) {
	seen := map[string]bool{}
	fpKey := map[string]string{} // model fingerprint -> dedup.key
	fpOf := map[string]string{}  // dedup.key -> model fingerprint
	for _, a := range audits {
		src, _ := header(a, "dedup.source")
		want, ok := wantAudit[src]
		if seen[src] {
			rep.Duplicated++
			rep.problem("audit: %s audited twice", src)
			continue
		}
		seen[src] = true
		if !ok {
			rep.Wrong++
			rep.problem("audit: %s audited but the model says first_seen (or no such input)", src)
			continue
		}
		// kdedup's headers follow the input's own, which may carry
		// dedup.* headers of their own (an audit record fed back, or a
		// hostile producer).
		own := &kgo.Record{Headers: a.Headers[min(len(want.input.Headers), len(a.Headers)):]}
		reason, _ := header(own, "dedup.reason")
		key, hasKey := header(own, "dedup.key")
		first, _ := header(own, "dedup.first")
		firstTS, _ := header(own, "dedup.first_ts")
		stream, _ := header(own, "dedup.stream")
		wantTS := ""
		if want.First != "" {
			wantTS = strconv.FormatInt(want.FirstTS, 10)
		}
		wantKey, keyOK := want.Key, key == want.Key
		if want.FP != "" {
			wantKey = "fp:<32 hex digits, one per fingerprint>"
			keyOK = fpKeyRE.MatchString(key)
			if k, ok := fpKey[want.FP]; ok && k != key {
				keyOK = false
				wantKey = k
			}
			if f, ok := fpOf[key]; ok && f != want.FP {
				keyOK = false
				wantKey = "another key: " + key + " is the fingerprint of " + f
			}
			if keyOK {
				fpKey[want.FP], fpOf[key] = key, want.FP
			}
		}
		if reason != want.Reason || !keyOK || hasKey != (want.Key != "" || want.FP != "") || first != want.First || firstTS != wantTS || stream != want.Stream {
			rep.Wrong++
			rep.problem("audit: %s: reason=%s key=%q first=%s first_ts=%s stream=%s; model: reason=%s key=%q first=%s first_ts=%s stream=%s",
				src, reason, key, first, firstTS, stream, want.Reason, wantKey, want.First, wantTS, want.Stream)
			continue
		}
		if diff := differs(a, want.input); diff != "" {
			rep.Wrong++
			rep.problem("audit: %s: %s differs from the input record's", src, diff)
		}
	}
	for src := range wantAudit {
		if !seen[src] {
			rep.Lost++
			rep.problem("audit: %s (%s) missing", src, wantAudit[src].Reason)
		}
	}
}

var fpKeyRE = regexp.MustCompile(`^fp:[0-9a-f]{32}$`)

// differs names what of audit record a is not input record in as it was:
// its key, value, timestamp or headers other than dedup.*; "" when all
// are.
func differs(a, in *kgo.Record) string {
	var diffs []string
	if !bytes.Equal(a.Key, in.Key) {
		diffs = append(diffs, fmt.Sprintf("key %q (input %q)", a.Key, in.Key))
	}
	if !bytes.Equal(a.Value, in.Value) {
		diffs = append(diffs, fmt.Sprintf("value %q (input %q)", a.Value, in.Value))
	}
	if !a.Timestamp.Equal(in.Timestamp) {
		diffs = append(diffs, fmt.Sprintf("timestamp %d (input %d)", a.Timestamp.UnixMilli(), in.Timestamp.UnixMilli()))
	}
	// The input's headers first, then only kdedup's dedup.* headers.
	var hs []string
	for i, h := range a.Headers {
		if i < len(in.Headers) || !strings.HasPrefix(h.Key, "dedup.") {
			hs = append(hs, fmt.Sprintf("%q=%q", h.Key, h.Value))
		}
	}
	var ins []string
	for _, h := range in.Headers {
		ins = append(ins, fmt.Sprintf("%q=%q", h.Key, h.Value))
	}
	if strings.Join(hs, ",") != strings.Join(ins, ",") {
		diffs = append(diffs, fmt.Sprintf("headers [%s] (input [%s])", strings.Join(hs, ","), strings.Join(ins, ",")))
	}
	return strings.Join(diffs, ", ")
}

func containsFrom(rs []*kgo.Record, from int, r *kgo.Record) bool {
	for _, x := range rs[from:] {
		if sameRecord(x, r) {
			return true
		}
	}
	return false
}

// signature identifies a record by what an output keeps.
func signature(r *kgo.Record) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%q|%q|%d", r.Key, r.Value, r.Timestamp.UnixMilli())
	for _, h := range r.Headers {
		fmt.Fprintf(&b, "|%q=%q", h.Key, h.Value)
	}
	return b.String()
}

// sameRecord compares what an output must keep: key, value, headers,
// timestamp.
func sameRecord(a, b *kgo.Record) bool {
	if !bytes.Equal(a.Key, b.Key) || !bytes.Equal(a.Value, b.Value) || !a.Timestamp.Equal(b.Timestamp) || len(a.Headers) != len(b.Headers) {
		return false
	}
	for i := range a.Headers {
		if a.Headers[i].Key != b.Headers[i].Key || !bytes.Equal(a.Headers[i].Value, b.Headers[i].Value) {
			return false
		}
	}
	return true
}

// CheckRepartitioned checks a run with the repartition step: every input
// forwarded to its stream's repartition topic exactly once (reps, read
// back with their origin headers), then decided in the repartition
// topics' order: every first-seen input exactly once in its output, in the
// input's partition, byte-identical (order across keys is the repartition
// topics', so outputs are compared as multisets); every other input
// exactly once in the audit with its own coordinates, reason, key and
// first-seen coordinates.
func (tp *Topics) CheckRepartitioned(inputs, reps, outputs, audits []*kgo.Record) *Report {
	rep := &Report{ByReason: map[string]int{}, Inputs: len(inputs)}
	coords := func(topic string, p int32, o int64) string { return fmt.Sprintf("%s/%d/%d", topic, p, o) }
	byCoord := map[string]*kgo.Record{}
	for _, in := range inputs {
		byCoord[coords(in.Topic, in.Partition, in.Offset)] = in
	}
	forwarded := map[string]bool{}
	var ordered []*kgo.Record
	origin := map[*kgo.Record]string{}
	for _, r := range reps {
		src, _ := header(r, "dedup.origin")
		switch {
		case byCoord[src] == nil:
			rep.Wrong++
			rep.problem("repartition %s/%d/%d: origin %q is no input", r.Topic, r.Partition, r.Offset, src)
			continue
		case forwarded[src]:
			rep.Duplicated++
			rep.problem("repartition: %s forwarded twice", src)
			continue
		}
		forwarded[src] = true
		ordered = append(ordered, r)
		origin[r] = src
	}
	for c := range byCoord {
		if !forwarded[c] {
			rep.Lost++
			rep.problem("repartition: %s never forwarded", c)
		}
	}
	sort.Slice(ordered, func(i, j int) bool {
		a, b := ordered[i], ordered[j]
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		if a.Partition != b.Partition {
			return a.Partition < b.Partition
		}
		return a.Offset < b.Offset
	})
	m := tp.NewModel()
	wantOut := map[string]int{} // output topic/partition + signature -> count
	wantAudit := map[string]Expect{}
	routed := map[string]int32{} // stream and scoped key -> repartition partition
	for _, r := range ordered {
		in := byCoord[origin[r]]
		// The model sees the input record in the repartition partition's
		// place.
		c := *in
		c.Partition, c.Offset = r.Partition, r.Offset
		e := m.DecideAt(&c, origin[r])
		if e.id != "" {
			// Every copy of a key must reach the same partition, or the
			// model, following kdedup's routing, would agree with it.
			k := in.Topic + "\x00" + e.id
			if p, ok := routed[k]; ok && p != r.Partition {
				rep.Wrong++
				rep.problem("%s (key %q) routed to repartition partition %d, earlier copies to %d", origin[r], e.Key, r.Partition, p)
			}
			routed[k] = r.Partition
		}
		rep.ByReason[e.Reason]++
		if e.Reason == "first_seen" {
			out := tp.PushOutput
			if in.Topic == tp.OrderInput {
				out = tp.OrderOutput
			}
			wantOut[fmt.Sprintf("%s/%d|%s", out, in.Partition, signature(in))]++
			rep.FirstSeen++
		} else {
			e.input = in
			wantAudit[origin[r]] = e
			rep.Audited++
		}
	}
	rep.Exercised = m.Exercised
	for _, o := range outputs {
		k := fmt.Sprintf("%s/%d|%s", o.Topic, o.Partition, signature(o))
		if wantOut[k] > 0 {
			wantOut[k]--
			continue
		}
		rep.Wrong++
		rep.problem("%s/%d: output offset %d (%q) is not an expected first-seen record (or one too many)", o.Topic, o.Partition, o.Offset, o.Value)
	}
	for k, n := range wantOut {
		if n > 0 {
			rep.Lost += n
			rep.problem("output %s missing %d times", k, n)
		}
	}
	rep.checkAudits(audits, wantAudit)
	return rep
}
