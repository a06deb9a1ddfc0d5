// Package e2e is the end-to-end harness of kdedup's tests: a workload of
// push and order events with every kind of decision, an independent model of
// DESIGN.md 6.3 that says what each input record must become, and a checker
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

// Stream settings of the test configuration (Topics.Config).
const (
	PushTTL    = 10 * time.Minute
	OrderTTL   = 20 * time.Minute
	Partitions = 3
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
// keyed by header or body field under a tenant header, orders keyed by
// UUID under a tenant field.
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
streams:
  - name: push
    input: %s
    output: %s
    ttl: %v
    key:
      - header: Idempotency-Key
      - json: data.resubmitCheckKey
    scope: [header:tenant-id]
    key_max_length: 64
    repartition: %v
  - name: order
    input: %s
    output: %s
    ttl: %v
    key:
      - header: X-Client-Token
      - json: order_id
    scope: [json:tenant_id]
    key_format: uuid
    repartition: %v
%s`, tp.Group, instance, stateDir, tp.Audit, tp.PushInput, tp.PushOutput, PushTTL, tp.Repartition, tp.OrderInput, tp.OrderOutput, OrderTTL, tp.Repartition, extra)
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

// Next returns the next event: a new push or order event, an exact copy of
// a recent one, a conflicting reuse of its key, a re-send after the ttl,
// the same key under another tenant, an over-long or non-UUID key, a
// record with no key, or a value that is not JSON.
func (w *Workload) Next() *kgo.Record {
	w.n++
	w.clock = w.clock.Add(time.Duration(200+w.rng.IntN(1800)) * time.Millisecond)
	p := w.rng.IntN(100)
	if len(w.sent) > 0 && p < 45 {
		orig := w.sent[len(w.sent)-1-w.rng.IntN(min(len(w.sent), 300))]
		r := clone(orig)
		r.Timestamp = w.clock
		switch {
		case p < 25: // exact copy
		case p < 32: // same key, other payload
			r.Value = append(bytes.TrimSuffix(r.Value, []byte("}")), []byte(fmt.Sprintf(`,"retry":%d}`, w.n))...)
		case p < 38: // re-sent after the key's ttl: first-seen again
			ttl := PushTTL
			if r.Topic == w.tp.OrderInput {
				ttl = OrderTTL
			}
			r.Timestamp = orig.Timestamp.Add(ttl + time.Second)
			if r.Timestamp.Before(w.clock) {
				r.Timestamp = w.clock
			}
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
		case q < 50:
			setHeader(r, "Idempotency-Key", key)
			r.Value = []byte(body + "}")
		case q < 85:
			r.Value = []byte(body + `,"data":{"resubmitCheckKey":"` + key + `"}}`)
		case q < 91:
			long := strings.Repeat("k", 65) + key // invalid_key: over 64 bytes
			setHeader(r, "Idempotency-Key", long)
			r.Key = []byte(long)
			r.Value = []byte(body + "}")
		case q < 96:
			r.Value = []byte(body + "}") // missing_key
		default:
			r.Value = []byte(body) // malformed: not JSON, no header
		}
	} else {
		id := fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", w.rng.Uint32(), w.rng.IntN(1<<16), w.rng.IntN(1<<12), w.rng.IntN(1<<12), w.rng.Uint64()&(1<<48-1))
		r = &kgo.Record{Topic: w.tp.OrderInput, Key: []byte(id)}
		body := fmt.Sprintf(`{"tenant_id":"%s","amount":%d,"currency":"EUR"`, tenant, w.rng.IntN(10000))
		switch q := w.rng.IntN(100); {
		case q < 45:
			setHeader(r, "X-Client-Token", id)
			r.Value = []byte(body + "}")
		case q < 88:
			r.Value = []byte(body + `,"order_id":"` + id + `"}`)
		case q < 94:
			r.Value = []byte(body + `,"order_id":"order-` + strconv.Itoa(w.n) + `"}`) // invalid_key: not a UUID
			r.Key = []byte("order-" + strconv.Itoa(w.n))
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
	Key     string // dedup.key; "" when missing
	First   string // dedup.first for duplicate and conflict
	FirstTS int64
	id      string // the scoped key, for a valid key
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

type modelEntry struct {
	first   string
	firstTS int64
	expiry  int64
	value   string
}

type partModel struct {
	keys map[string]*modelEntry
	wm   int64
}

// Model decides input records as DESIGN.md 6.3 says, for Config's two
// streams, in each partition's offset order.
type Model struct {
	tp    *Topics
	parts map[string]*partModel
}

// NewModel returns an empty model of tp's streams.
func (tp *Topics) NewModel() *Model { return &Model{tp: tp, parts: map[string]*partModel{}} }

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

// Decide returns what input record r (with its offset) must become.
func (m *Model) Decide(r *kgo.Record) Expect {
	return m.DecideAt(r, fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset))
}

// DecideAt is Decide for a record whose own coordinates are src: with
// the repartition step, r is the repartitioned copy (its partition the
// state's) and src the input record it stands for.
func (m *Model) DecideAt(r *kgo.Record, src string) Expect {
	pk := fmt.Sprintf("%s/%d", r.Topic, r.Partition)
	pm := m.parts[pk]
	if pm == nil {
		pm = &partModel{keys: map[string]*modelEntry{}, wm: math.MinInt64}
		m.parts[pk] = pm
	}
	ts := r.Timestamp.UnixMilli()
	wm := pm.wm
	pm.wm = max(pm.wm, ts)

	var headerName, jsonPath, scope string
	var ttl time.Duration
	if r.Topic == m.tp.PushInput {
		headerName, jsonPath, ttl = "Idempotency-Key", "data.resubmitCheckKey", PushTTL
		scope, _ = header(r, "tenant-id")
	} else {
		headerName, jsonPath, ttl = "X-Client-Token", "order_id", OrderTTL
		if t, ok, _ := jsonKey(r.Value, "tenant_id"); ok {
			scope = t
		}
	}
	key, ok := header(r, headerName)
	ok = ok && key != ""
	sawBad := false
	if !ok {
		var isJSON bool
		key, ok, isJSON = jsonKey(r.Value, jsonPath)
		sawBad = !isJSON
	}
	switch {
	case !ok && sawBad:
		return Expect{Reason: "malformed"}
	case !ok:
		return Expect{Reason: "missing_key"}
	case r.Topic == m.tp.PushInput && len(key) > 64, r.Topic == m.tp.OrderInput && !uuidRE.MatchString(key):
		return Expect{Reason: "invalid_key", Key: key}
	}
	id := scope + "\x00" + key
	e := pm.keys[id]
	ttlMs := ttl.Milliseconds()
	if e == nil || ts >= e.expiry || wm >= e.expiry+ttlMs /* lateness = ttl */ {
		pm.keys[id] = &modelEntry{first: src, firstTS: ts, expiry: ts + ttlMs, value: string(r.Value)}
		return Expect{Reason: "first_seen", Key: key, id: id}
	}
	reason := "duplicate"
	if e.value != string(r.Value) {
		reason = "conflict"
	}
	return Expect{Reason: reason, Key: key, First: e.first, FirstTS: e.firstTS, id: id}
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
	Lost, Duplicated, Wrong    int
	Problems                   []string
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
	s := fmt.Sprintf("inputs=%d first_seen=%d audited=%d [%s] lost=%d duplicated=%d wrong=%d",
		r.Inputs, r.FirstSeen, r.Audited, strings.Join(reasons, " "), r.Lost, r.Duplicated, r.Wrong)
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
			wantAudit[src] = e
			rep.Audited++
		}
	}
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
// source coordinates.
func (rep *Report) checkAudits(audits []*kgo.Record, wantAudit map[string]Expect) {
	seen := map[string]bool{}
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
		reason, _ := header(a, "dedup.reason")
		key, hasKey := header(a, "dedup.key")
		first, _ := header(a, "dedup.first")
		firstTS, _ := header(a, "dedup.first_ts")
		wantTS := ""
		if want.First != "" {
			wantTS = strconv.FormatInt(want.FirstTS, 10)
		}
		if reason != want.Reason || key != want.Key || hasKey != (want.Key != "") || first != want.First || firstTS != wantTS {
			rep.Wrong++
			rep.problem("audit: %s: reason=%s key=%q first=%s first_ts=%s; model: reason=%s key=%q first=%s first_ts=%s",
				src, reason, key, first, firstTS, want.Reason, want.Key, want.First, wantTS)
		}
	}
	for src := range wantAudit {
		if !seen[src] {
			rep.Lost++
			rep.problem("audit: %s (%s) missing", src, wantAudit[src].Reason)
		}
	}
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
			wantAudit[origin[r]] = e
			rep.Audited++
		}
	}
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
