package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/internal/e2e"
)

// kfakeMaxMessageBytes is kfake's default max.message.bytes (and
// message.max.bytes), Apache Kafka's too: the largest record batch a topic
// created without that setting takes. Input, push output and audit topics
// of TestHostileInput have it.
const kfakeMaxMessageBytes = 1048588

// orderOutputLimit is the max.message.bytes of TestHostileInput's order
// output: far below the inputs', so that a record the input takes can be
// just over what the output takes.
const orderOutputLimit = 100_000

// batchBytes is the size of a record batch holding one record of key,
// value and headers, uncompressed: what a broker compares with
// max.message.bytes (61 bytes of batch header, then the record). A nil
// value or key is a length of -1, as an empty one is a length of 0: one
// byte either way.
func batchBytes(key, value []byte, hs []kgo.RecordHeader) int {
	body := 3 // attributes; timestamp and offset deltas, 0 in a batch of one
	body += bytesLen(key) + bytesLen(value) + varintLen(len(hs))
	for _, h := range hs {
		body += varintLen(len(h.Key)) + len(h.Key) + bytesLen(h.Value)
	}
	return 61 + varintLen(body) + body
}

func recordBytes(r *kgo.Record) int { return batchBytes(r.Key, r.Value, r.Headers) }

func varintLen(n int) int {
	l := 1
	for u := uint64(n) << 1; u >= 0x80; u >>= 7 { // zig-zag of n >= 0
		l++
	}
	return l
}

func bytesLen(b []byte) int {
	if b == nil {
		return 1
	}
	return varintLen(len(b)) + len(b)
}

// randomBytes returns n random bytes: incompressible, so that no
// producer's compression makes a large record small.
func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// randomText returns n random printable ASCII bytes other than '"' and
// '\': a JSON string's content as it is.
func randomText(rng *rand.Rand, n int) string {
	const alphabet = " !#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(b)
}

// padTo grows what grow returns (the record's own slice of bytes, grown by
// the number of bytes asked for) until r's batch is exactly size bytes.
func padTo(t *testing.T, r *kgo.Record, size int, grow func(r *kgo.Record, n int)) {
	t.Helper()
	for i := 0; i < 8; i++ {
		d := size - recordBytes(r)
		if d == 0 {
			return
		}
		if d < 0 {
			grow(r, d) // varint lengths grew past the target: shrink
			continue
		}
		grow(r, d)
	}
	t.Fatalf("cannot pad the record to %d bytes: %d", size, recordBytes(r))
}

// hostileCase is records of one input partition that kdedup must decide
// without crashing or stalling the partition.
type hostileCase struct {
	name string
	recs []*kgo.Record
}

// decidedWatch reads the output and audit topics under read_committed in
// the background and tells when a record carrying a given canary header
// value was decided.
type decidedWatch struct {
	mu   sync.Mutex
	seen map[string]bool
	wake chan struct{}
	stop func()
}

func watchDecided(t *testing.T, e *env) *decidedWatch {
	cl, err := kgo.NewClient(e.conn(kgo.ConsumeTopics(e.tp.Decided()...), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &decidedWatch{seen: map[string]bool{}, wake: make(chan struct{})}
	done := make(chan struct{})
	w.stop = func() { cancel(); <-done; cl.Close() }
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			w.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				for _, h := range r.Headers {
					if h.Key == "canary" {
						w.seen[string(h.Value)] = true
					}
				}
			})
			close(w.wake)
			w.wake = make(chan struct{})
			w.mu.Unlock()
		}
	}()
	return w
}

// wait waits until the canary was decided, or d has passed.
func (w *decidedWatch) wait(canary string, d time.Duration) bool {
	deadline := time.After(d)
	for {
		w.mu.Lock()
		ok, wake := w.seen[canary], w.wake
		w.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-wake:
		case <-deadline:
			return false
		}
	}
}

// hostileProducer produces records as they are: to the partition they
// name, uncompressed, with batches a few bytes above the inputs' limit
// (franz-go counts the batch's length prefix too), so that the broker,
// not the client, judges a record's size.
func hostileProducer(t *testing.T, e *env) *kgo.Client {
	cl, err := kgo.NewClient(e.conn(kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.ProducerBatchMaxBytes(kfakeMaxMessageBytes+8),
		kgo.ProducerLinger(0))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// TestHostileInput feeds kdedup, on three brokers, records built to hurt:
// 1 MB idempotency keys in a header and in JSON, 1 MB header and scope
// values (header and JSON scope), thousands of headers (and thousands of
// key headers, the last of which counts), binary garbage values, JSON
// nested past encoding/json's depth limit, invalid UTF-8 in keys and in
// scope values, records at the broker's size limit (its bulk in the value,
// a header, the Kafka key or the idempotency key itself), records just
// over what the order output takes and exactly at it, empty and null
// values, JSON without a key, null and empty Kafka keys. After each case a canary record on
// the same partition must be decided within a minute: no case may stall
// its partition, and kdedup must never exit. Then every record's result
// is checked exactly: the decision by the model (internal/e2e), its
// routing by the topics' limits (checkLimited): a first-seen record its
// output cannot take is audited too_large, and an audit record the audit
// topic cannot take is written in the most complete form that fits.
func TestHostileInput(t *testing.T) {
	e := fakeSetup(t, threeBrokers)
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 7))
	adm := kadm.NewClient(producerClient(t, e))
	limit := strconv.Itoa(orderOutputLimit)
	if resp, err := adm.CreateTopics(context.Background(), e2e.Partitions, -1, map[string]*string{"max.message.bytes": &limit}, e.tp.OrderOutput); err != nil || resp.Error() != nil {
		t.Fatalf("creating the order output: %v %v", err, resp.Error())
	}
	lim := hostileLimits{audit: kfakeMaxMessageBytes, out: map[string]int{e.tp.PushOutput: kfakeMaxMessageBytes, e.tp.OrderOutput: orderOutputLimit}}
	in := start(t, e.config(t, "hostile", ""))
	pcl := hostileProducer(t, e)

	// The producer's own check of the size function: a record of exactly
	// the limit is taken, one byte more refused.
	probe := &kgo.Record{Topic: "size-probe", Value: randomBytes(rng, 1000)}
	padTo(t, probe, kfakeMaxMessageBytes, growValue)
	if _, err := adm.CreateTopic(context.Background(), 1, -1, nil, "size-probe"); err != nil {
		t.Fatal(err)
	}
	if err := pcl.ProduceSync(context.Background(), probe).FirstErr(); err != nil {
		t.Fatalf("a record of exactly %d bytes: %v", kfakeMaxMessageBytes, err)
	}
	probe = &kgo.Record{Topic: "size-probe", Value: append(probe.Value, 0)}
	if err := pcl.ProduceSync(context.Background(), probe).FirstErr(); !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("a record of %d bytes: %v, want MESSAGE_TOO_LARGE", kfakeMaxMessageBytes+1, err)
	}

	cases := hostileCases(t, e, rng)
	watch := watchDecided(t, e)
	defer watch.stop()
	n := 0
	for i, c := range cases {
		last := c.recs[len(c.recs)-1]
		canary := canaryRecord(e, last.Topic, last.Partition, i, rng)
		recs := append(append([]*kgo.Record(nil), c.recs...), canary)
		if err := pcl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatalf("case %q: producing: %v", c.name, err)
		}
		n += len(recs)
		began := time.Now()
		if !watch.wait(strconv.Itoa(i), time.Minute) {
			t.Fatalf("case %q stalled %s/%d: the record after it was not decided within a minute\nkdedup's goroutines and log: %s", c.name, last.Topic, last.Partition, in.dump())
		}
		select {
		case err := <-in.done:
			t.Fatalf("case %q: kdedup exited: %v\n%s", c.name, err, in.logs)
		default:
		}
		t.Logf("case %q: %d records on %s/%d decided in %v", c.name, len(c.recs), last.Topic, last.Partition, time.Since(began).Round(time.Millisecond))
	}
	rep := checkLimited(t, e, n, lim)
	in.stop(t)
	t.Logf("hostile input: %v", rep)
	if !rep.OK() {
		t.Fatalf("%v", rep)
	}
	for _, x := range []string{"first_seen", "duplicate", "conflict", "invalid_key", "missing_key", "malformed", "too_large", "value_dropped", "stripped", "key_dropped"} {
		if rep.ByReason[x] == 0 {
			t.Errorf("no record ended %s: %v", x, rep)
		}
	}
}

// padRNG pads records with random bytes (the test goroutine's only).
var padRNG = rand.New(rand.NewPCG(3, 4))

func growValue(r *kgo.Record, n int) {
	if n < 0 {
		r.Value = r.Value[:len(r.Value)+n]
		return
	}
	r.Value = append(r.Value, randomBytes(padRNG, n)...)
}

// growHeader grows the value of r's header named name.
func growHeader(name string) func(r *kgo.Record, n int) {
	return func(r *kgo.Record, n int) {
		for i := range r.Headers {
			if r.Headers[i].Key == name {
				if n < 0 {
					r.Headers[i].Value = r.Headers[i].Value[:len(r.Headers[i].Value)+n]
				} else {
					r.Headers[i].Value = append(r.Headers[i].Value, randomBytes(padRNG, n)...)
				}
			}
		}
	}
}

func growKey(r *kgo.Record, n int) {
	if n < 0 {
		r.Key = r.Key[:len(r.Key)+n]
		return
	}
	r.Key = append(r.Key, randomBytes(padRNG, n)...)
}

// canaryRecord is an ordinary first-seen record of topic's stream on
// partition p, with the header canary: i.
func canaryRecord(e *env, topic string, p int32, i int, rng *rand.Rand) *kgo.Record {
	r := &kgo.Record{Topic: topic, Partition: p, Timestamp: hostileClock(), Headers: []kgo.RecordHeader{{Key: "canary", Value: []byte(strconv.Itoa(i))}}}
	if topic == e.tp.PushInput {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: "Idempotency-Key", Value: fmt.Appendf(nil, "canary-%d-%d", i, rng.Uint64())})
		r.Value = fmt.Appendf(nil, `{"canary":%d}`, i)
	} else {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: "X-Client-Token", Value: []byte(randomUUID(rng))})
		r.Value = fmt.Appendf(nil, `{"tenant_id":"c","amount":%d,"currency":"EUR"}`, i)
	}
	return r
}

func randomUUID(rng *rand.Rand) string {
	return fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", rng.Uint32(), rng.IntN(1<<16), rng.IntN(1<<12), rng.IntN(1<<12), rng.Uint64()&(1<<48-1))
}

// hostileClock stamps the records of TestHostileInput: a second apart,
// starting an hour ago, all well within one ttl of each other.
var hostileClock = func() func() time.Time {
	var mu sync.Mutex
	var at time.Time
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		if at.IsZero() {
			at = time.Now().Add(-time.Hour).Truncate(time.Millisecond)
		}
		at = at.Add(time.Second)
		return at
	}
}()

func hostileCases(t *testing.T, e *env, rng *rand.Rand) []hostileCase {
	h := func(k string, v []byte) kgo.RecordHeader { return kgo.RecordHeader{Key: k, Value: v} }
	part := int32(0)
	next := func() int32 { part = (part + 1) % e2e.Partitions; return part }
	push := func(p int32, value []byte, hs ...kgo.RecordHeader) *kgo.Record {
		return &kgo.Record{Topic: e.tp.PushInput, Partition: p, Value: value, Headers: hs, Timestamp: hostileClock()}
	}
	order := func(p int32, value []byte, hs ...kgo.RecordHeader) *kgo.Record {
		return &kgo.Record{Topic: e.tp.OrderInput, Partition: p, Value: value, Headers: hs, Timestamp: hostileClock()}
	}
	again := func(r *kgo.Record) *kgo.Record {
		c := *r
		c.Headers = append([]kgo.RecordHeader(nil), r.Headers...)
		c.Timestamp = hostileClock()
		return &c
	}
	const mb = 1_000_000
	tenant := h("tenant-id", []byte("t"))
	var cs []hostileCase
	add := func(name string, recs ...*kgo.Record) { cs = append(cs, hostileCase{name, recs}) }

	p := next()
	add("1 MB Idempotency-Key header", push(p, []byte(`{"body":"x"}`), h("Idempotency-Key", randomBytes(rng, mb)), tenant))
	p = next()
	add("1 MB JSON key", push(p, []byte(`{"data":{"resubmitCheckKey":"`+randomText(rng, mb)+`"}}`), tenant))
	p = next()
	add("1 MB X-Client-Token header", order(p, []byte(`{"tenant_id":"t","amount":1,"currency":"EUR"}`), h("X-Client-Token", randomBytes(rng, mb))))
	p = next()
	add("1 MB JSON order_id", order(p, []byte(`{"tenant_id":"t","amount":1,"currency":"EUR","order_id":"`+randomText(rng, mb)+`"}`)))

	p = next()
	r := push(p, []byte(`{"body":"big header"}`), h("Idempotency-Key", []byte("big-header")), tenant, h("x-blob", randomBytes(rng, mb)))
	add("1 MB header value", r, again(r))
	p = next()
	r = push(p, []byte(`{"body":"scoped"}`), h("Idempotency-Key", []byte("scoped")), h("tenant-id", randomBytes(rng, mb)))
	add("1 MB scope header", r, again(r), push(p, []byte(`{"body":"scoped"}`), h("Idempotency-Key", []byte("scoped")), h("tenant-id", randomBytes(rng, mb))))
	p = next()
	u := randomUUID(rng)
	scope := randomText(rng, mb)
	r = order(p, []byte(`{"tenant_id":"`+scope+`","amount":1,"currency":"EUR"}`), h("X-Client-Token", []byte(u)))
	add("1 MB JSON scope", r, again(r), order(p, []byte(`{"tenant_id":"`+scope+`","amount":2,"currency":"EUR"}`), h("X-Client-Token", []byte(u))))

	p = next()
	hs := []kgo.RecordHeader{h("Idempotency-Key", []byte("many-headers")), tenant}
	for i := 0; i < 5000; i++ {
		hs = append(hs, h("h-"+strconv.Itoa(i), []byte(strconv.Itoa(i))))
	}
	r = push(p, []byte(`{"body":"many headers"}`), hs...)
	add("5,000 headers", r, again(r))
	p = next()
	hs = []kgo.RecordHeader{tenant}
	for i := 0; i < 3000; i++ {
		hs = append(hs, h("Idempotency-Key", []byte("not-it-"+strconv.Itoa(i))))
	}
	hs = append(hs, h("Idempotency-Key", []byte("last-wins")))
	add("3,000 key headers, the last counts", push(p, []byte(`{"body":"last"}`), hs...),
		push(p, []byte(`{"body":"last"}`), h("Idempotency-Key", []byte("last-wins")), tenant),
		push(p, []byte(`{"body":"last"}`), h("Idempotency-Key", []byte("not-it-0")), tenant))

	p = next()
	g1, g2 := randomBytes(rng, 64<<10), randomBytes(rng, 64<<10)
	add("binary garbage values", push(p, g1, tenant), push(p, g1, h("Idempotency-Key", []byte("garbage")), tenant),
		push(p, g1, h("Idempotency-Key", []byte("garbage")), tenant), push(p, g2, h("Idempotency-Key", []byte("garbage")), tenant))
	p = next()
	u = randomUUID(rng)
	add("binary garbage orders", order(p, g2), order(p, g1, h("X-Client-Token", []byte(u))), order(p, g1, h("X-Client-Token", []byte(u))),
		order(p, g2, h("X-Client-Token", []byte(u))))
	p = next()
	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	ok := `{"data":{"resubmitCheckKey":"deep"},"x":` + strings.Repeat("[", 9000) + strings.Repeat("]", 9000) + `}`
	add("JSON nested deeper than encoding/json goes", push(p, []byte(deep), tenant), push(p, []byte(ok), tenant), push(p, []byte(ok), tenant),
		push(p, []byte(`{"data":{"resubmitCheckKey":"deep2"},"x":`+deep+`}`), tenant))

	p = next()
	bad := []byte("\xff\xfe\x80k")
	add("invalid UTF-8 in keys", push(p, []byte(`{"body":"u"}`), h("Idempotency-Key", bad), tenant), push(p, []byte(`{"body":"u"}`), h("Idempotency-Key", bad), tenant),
		push(p, []byte("{\"data\":{\"resubmitCheckKey\":\"\xffk\"}}"), tenant), push(p, []byte("{\"data\":{\"resubmitCheckKey\":\"\xfek\"}}"), tenant),
		push(p, []byte("{\"data\":{\"resubmitCheckKey\":\"\xfek\"}}"), tenant))
	p = next()
	add("invalid UTF-8 order keys", order(p, []byte("{\"tenant_id\":\"t\",\"amount\":1,\"currency\":\"EUR\",\"order_id\":\"\xff\"}")),
		order(p, []byte(`{"tenant_id":"t","amount":1,"currency":"EUR"}`), h("X-Client-Token", []byte("\xc3\x28"+u[2:]))))
	p = next()
	add("invalid UTF-8 in scope values", push(p, []byte(`{"body":"s"}`), h("Idempotency-Key", []byte("utf8-scope")), h("tenant-id", []byte("\xff"))),
		push(p, []byte(`{"body":"s"}`), h("Idempotency-Key", []byte("utf8-scope")), h("tenant-id", []byte("\xfe"))),
		push(p, []byte(`{"body":"s"}`), h("Idempotency-Key", []byte("utf8-scope")), h("tenant-id", []byte("\xff"))))
	p = next()
	u = randomUUID(rng)
	add("invalid UTF-8 in JSON scope values", order(p, []byte("{\"tenant_id\":\"\xff\",\"amount\":1,\"currency\":\"EUR\"}"), h("X-Client-Token", []byte(u))),
		order(p, []byte("{\"tenant_id\":\"\xfe\",\"amount\":1,\"currency\":\"EUR\",\"x\":1}"), h("X-Client-Token", []byte(u))),
		order(p, []byte("{\"tenant_id\":\"\xfe\",\"amount\":3,\"currency\":\"EUR\"}"), h("X-Client-Token", []byte(u))))

	p = next()
	r = push(p, randomBytes(rng, 1000), h("Idempotency-Key", []byte("limit-value")), tenant)
	padTo(t, r, kfakeMaxMessageBytes, growValue)
	add("at the size limit, in the value", r, again(r))
	p = next()
	r = push(p, []byte(`{}`), h("Idempotency-Key", []byte("limit-header")), tenant, h("x-pad", randomBytes(rng, 1000)))
	padTo(t, r, kfakeMaxMessageBytes, growHeader("x-pad"))
	add("at the size limit, in a header", r, again(r))
	p = next()
	r = push(p, []byte(`{}`), h("Idempotency-Key", []byte("limit-kafka-key")), tenant)
	r.Key = randomBytes(rng, 1000)
	padTo(t, r, kfakeMaxMessageBytes, growKey)
	add("at the size limit, in the Kafka key", r, again(r))
	p = next()
	r = push(p, []byte(`{}`), h("Idempotency-Key", randomBytes(rng, 1000)), tenant)
	padTo(t, r, kfakeMaxMessageBytes, growHeader("Idempotency-Key"))
	add("an idempotency key at the size limit", r)

	p = next()
	u = randomUUID(rng)
	r = order(p, []byte(`{"tenant_id":"t","amount":1,"currency":"EUR","pad":"`+randomText(rng, 1000)+`"}`), h("X-Client-Token", []byte(u)))
	growPad := func(r *kgo.Record, n int) {
		v := r.Value[:len(r.Value)-2]
		if n < 0 {
			v = v[:len(v)+n]
		} else {
			v = append(v, randomText(rng, n)...)
		}
		r.Value = append(v, `"}`...)
	}
	padTo(t, r, orderOutputLimit+1, growPad)
	fits := order(p, []byte(`{"tenant_id":"t","amount":1,"currency":"EUR","pad":"`+randomText(rng, 1000)+`"}`), h("X-Client-Token", []byte(randomUUID(rng))))
	padTo(t, fits, orderOutputLimit, growPad)
	add("one byte over the order output's limit, and at it", r, again(r), fits)

	p = next()
	add("empty and null values", push(p, []byte{}, h("Idempotency-Key", []byte("empty")), tenant), push(p, []byte{}, h("Idempotency-Key", []byte("empty")), tenant),
		push(p, []byte{}, tenant), push(p, nil, h("Idempotency-Key", []byte("null-value")), tenant), push(p, nil, tenant),
		push(p, nil, h("Idempotency-Key", []byte("empty")), tenant))
	p = next()
	u = randomUUID(rng)
	add("empty and null orders", order(p, []byte{}, h("X-Client-Token", []byte(u))), order(p, nil, h("X-Client-Token", []byte(u))),
		order(p, []byte{}), order(p, nil), order(p, []byte(`{"tenant_id":"t","amount":1}`)), order(p, []byte(`{"order_id":""}`)))
	p = next()
	r = push(p, []byte(`{"body":"k"}`), h("Idempotency-Key", []byte("kafka-keys")), tenant)
	r2 := again(r)
	r2.Key = []byte{}
	r3 := again(r)
	r3.Key = []byte("k")
	add("null, empty and other Kafka keys", r, r2, r3)
	return cs
}

// hostileLimits are the max.message.bytes of the outputs and the audit.
type hostileLimits struct {
	out   map[string]int
	audit int
}

// checkLimited reads inputs (n of them), outputs and audit back and
// checks each input's result: the model's decision, routed by the topics'
// limits. A first-seen record whose batch would be larger than its output
// takes is audited too_large (dedup.refused_by, dedup.refused_error
// MESSAGE_TOO_LARGE). An audit record is written whole if it fits the
// audit topic; else without its value (dedup.value_dropped: its size); if
// that does not fit either, stripped to the dedup.* headers (no value, no
// Kafka key, none of the input's headers; dedup.stripped: the bytes of the
// Kafka key and headers dropped); if even that does not fit, without
// dedup.key too (dedup.key_dropped: its size). Report.ByReason counts the
// decisions and, besides, too_large, value_dropped, stripped and
// key_dropped.
func checkLimited(t *testing.T, e *env, n int, lim hostileLimits) *e2e.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	inputs, err := e2e.ReadAll(ctx, e.conn(), n, time.Second, e.tp.Inputs()...)
	if err != nil {
		t.Fatal(err)
	}
	decided, err := e2e.ReadAll(ctx, e.conn(), n, 2*time.Second, e.tp.Decided()...)
	if err != nil {
		t.Logf("reading results: %v", err)
	}
	outs, audits := e.split(decided)
	rep := &e2e.Report{Inputs: len(inputs), ByReason: map[string]int{}}
	problem := func(kind *int, f string, args ...any) {
		*kind++
		if len(rep.Problems) < 30 {
			rep.Problems = append(rep.Problems, fmt.Sprintf(f, args...))
		}
	}
	sort.Slice(inputs, func(i, j int) bool {
		a, b := inputs[i], inputs[j]
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		if a.Partition != b.Partition {
			return a.Partition < b.Partition
		}
		return a.Offset < b.Offset
	})
	m := e.tp.NewModel()
	type want struct {
		e2e.Expect
		in        *kgo.Record
		refusedBy string
	}
	wantOut := map[string][]*kgo.Record{}
	wantAudit := map[string]want{}
	for _, in := range inputs {
		x := m.Decide(in)
		rep.ByReason[x.Reason]++
		src := fmt.Sprintf("%s/%d/%d", in.Topic, in.Partition, in.Offset)
		if x.Reason != "first_seen" {
			wantAudit[src] = want{Expect: x, in: in}
			continue
		}
		out := e.tp.PushOutput
		if in.Topic == e.tp.OrderInput {
			out = e.tp.OrderOutput
		}
		if recordBytes(in) > lim.out[out] {
			rep.ByReason["too_large"]++
			x.Reason = "too_large"
			wantAudit[src] = want{Expect: x, in: in, refusedBy: out}
			continue
		}
		k := fmt.Sprintf("%s/%d", out, in.Partition)
		wantOut[k] = append(wantOut[k], in)
		rep.FirstSeen++
	}
	gotOut := map[string][]*kgo.Record{}
	for _, o := range outs {
		k := fmt.Sprintf("%s/%d", o.Topic, o.Partition)
		gotOut[k] = append(gotOut[k], o)
	}
	for k := range wantOut {
		if _, ok := gotOut[k]; !ok {
			gotOut[k] = nil
		}
	}
	for k, got := range gotOut {
		sort.Slice(got, func(i, j int) bool { return got[i].Offset < got[j].Offset })
		w := wantOut[k]
		for i := 0; i < max(len(w), len(got)); i++ {
			switch {
			case i >= len(got):
				problem(&rep.Lost, "%s: first-seen %s/%d/%d (%d bytes) missing", k, w[i].Topic, w[i].Partition, w[i].Offset, recordBytes(w[i]))
			case i >= len(w):
				problem(&rep.Wrong, "%s: extra output at offset %d (%d bytes)", k, got[i].Offset, recordBytes(got[i]))
			case recordDiff(got[i], w[i]) != "":
				problem(&rep.Wrong, "%s: output %d is not first-seen %s/%d/%d: %s", k, i, w[i].Topic, w[i].Partition, w[i].Offset, recordDiff(got[i], w[i]))
			}
		}
	}
	fpKey := regexp.MustCompile(`^fp:[0-9a-f]{32}$`)
	seen := map[string]bool{}
	for _, a := range audits {
		hs := headerMap(a)
		src := hs["dedup.source"]
		w, ok := wantAudit[src]
		switch {
		case seen[src]:
			problem(&rep.Duplicated, "audit: %s audited twice", src)
			continue
		case !ok:
			problem(&rep.Wrong, "audit: %s audited, but the model says first_seen into an output that takes it", src)
			continue
		}
		seen[src] = true
		rep.Audited++
		wantFirst, wantTS := w.First, ""
		if w.First != "" {
			wantTS = strconv.FormatInt(w.FirstTS, 10)
		}
		_, hasKey := hs["dedup.key"]
		keyOK := hs["dedup.key"] == w.Key && hasKey == (w.Key != "" || w.FP != "")
		if w.FP != "" {
			keyOK = fpKey.MatchString(hs["dedup.key"])
		}
		if _, dropped := hs["dedup.key_dropped"]; dropped {
			keyOK = !hasKey && hs["dedup.key_dropped"] == strconv.Itoa(len(w.Key))
		}
		refusedOK := hs["dedup.refused_by"] == w.refusedBy
		if w.refusedBy != "" {
			refusedOK = refusedOK && hs["dedup.refused_error"] == "MESSAGE_TOO_LARGE"
		}
		if hs["dedup.reason"] != w.Reason || !keyOK || hs["dedup.first"] != wantFirst || hs["dedup.first_ts"] != wantTS || hs["dedup.stream"] != w.Stream || !refusedOK {
			problem(&rep.Wrong, "audit: %s: reason=%s key=%.40q first=%s first_ts=%s stream=%s refused_by=%s; model: reason=%s key=%.40q first=%s first_ts=%s stream=%s refused_by=%s",
				src, hs["dedup.reason"], hs["dedup.key"], hs["dedup.first"], hs["dedup.first_ts"], hs["dedup.stream"], hs["dedup.refused_by"],
				w.Reason, w.Key, wantFirst, wantTS, w.Stream, w.refusedBy)
			continue
		}
		if diff := auditForm(a, w.in, w.Key, lim.audit, rep); diff != "" {
			problem(&rep.Wrong, "audit: %s (%s, input %d bytes): %s", src, w.Reason, recordBytes(w.in), diff)
		}
	}
	for src, w := range wantAudit {
		if !seen[src] {
			problem(&rep.Lost, "audit: %s (%s, %d bytes) missing", src, w.Reason, recordBytes(w.in))
		}
	}
	return rep
}

func headerMap(r *kgo.Record) map[string]string {
	m := map[string]string{}
	for _, h := range r.Headers {
		m[h.Key] = string(h.Value)
	}
	return m
}

// The headers of a degraded audit record, and what else it carries: the
// decision's own dedup.* headers.
var degradation = map[string]bool{"dedup.value_dropped": true, "dedup.stripped": true, "dedup.key_dropped": true}

// auditForm checks audit record a of input in, whose dedup.key is key,
// against the form the audit topic (limit bytes) can take that keeps the
// most, and counts the form in rep.ByReason. It returns what is wrong, or
// "".
func auditForm(a, in *kgo.Record, key string, limit int, rep *e2e.Report) string {
	var own, decision []kgo.RecordHeader // the input's headers as carried; the dedup.* headers of the decision
	for _, h := range a.Headers {
		switch {
		case degradation[h.Key]:
		case strings.HasPrefix(h.Key, "dedup."):
			decision = append(decision, h)
		default:
			own = append(own, h)
		}
	}
	hm := headerMap(a)
	if _, ok := hm["dedup.key_dropped"]; ok {
		decision = append(decision, kgo.RecordHeader{Key: "dedup.key", Value: []byte(key)})
	}
	full := batchBytes(in.Key, in.Value, append(append([]kgo.RecordHeader(nil), in.Headers...), decision...))
	dropped := kgo.RecordHeader{Key: "dedup.value_dropped", Value: []byte(strconv.Itoa(len(in.Value)))}
	noValue := batchBytes(in.Key, nil, append(append(append([]kgo.RecordHeader(nil), in.Headers...), decision...), dropped))
	strippedBytes := len(in.Key)
	for _, h := range in.Headers {
		strippedBytes += len(h.Key) + len(h.Value)
	}
	stripped := kgo.RecordHeader{Key: "dedup.stripped", Value: []byte(strconv.Itoa(strippedBytes))}
	bare := batchBytes(nil, nil, append(append([]kgo.RecordHeader(nil), decision...), dropped, stripped))
	if !a.Timestamp.Equal(in.Timestamp) {
		return fmt.Sprintf("timestamp %v, input's %v", a.Timestamp, in.Timestamp)
	}
	switch {
	case full <= limit:
		if d := recordDiff(&kgo.Record{Key: a.Key, Value: a.Value, Headers: own, Timestamp: a.Timestamp}, in); d != "" || len(own)+len(decision) != len(a.Headers) {
			return fmt.Sprintf("fits the audit whole (%d bytes), yet %s (headers %d)", full, d, len(a.Headers))
		}
	case noValue <= limit:
		rep.ByReason["value_dropped"]++
		if d := recordDiff(&kgo.Record{Key: a.Key, Value: in.Value, Headers: own, Timestamp: a.Timestamp}, in); d != "" || a.Value != nil ||
			hm["dedup.value_dropped"] != string(dropped.Value) || len(own)+len(decision)+1 != len(a.Headers) {
			return fmt.Sprintf("%d bytes whole, %d without its value: want it without its value, with dedup.value_dropped %s; got value of %d bytes, dedup.value_dropped %q, %s",
				full, noValue, dropped.Value, len(a.Value), hm["dedup.value_dropped"], d)
		}
	default:
		rep.ByReason["stripped"]++
		form := "stripped"
		extra := 2
		if bare > limit {
			rep.ByReason["key_dropped"]++
			form = "stripped, without dedup.key"
			extra = 3
			if _, ok := hm["dedup.key_dropped"]; !ok {
				return fmt.Sprintf("%d bytes stripped: want dedup.key dropped too", bare)
			}
		}
		if extra == 3 {
			extra = 2 // dedup.key_dropped in place of dedup.key
		}
		if a.Key != nil || a.Value != nil || len(own) != 0 || hm["dedup.value_dropped"] != string(dropped.Value) || hm["dedup.stripped"] != string(stripped.Value) || len(decision)+extra != len(a.Headers) {
			return fmt.Sprintf("%d bytes without its value: want it %s (dedup.value_dropped %s, dedup.stripped %s); got key %d bytes, value %d bytes, %d own headers, dedup.value_dropped %q, dedup.stripped %q",
				noValue, form, dropped.Value, stripped.Value, len(a.Key), len(a.Value), len(own), hm["dedup.value_dropped"], hm["dedup.stripped"])
		}
	}
	return ""
}

// recordDiff names what of a is not b: key, value, timestamp, headers.
func recordDiff(a, b *kgo.Record) string {
	var d []string
	if !bytes.Equal(a.Key, b.Key) {
		d = append(d, fmt.Sprintf("key of %d bytes (want %d)", len(a.Key), len(b.Key)))
	}
	if !bytes.Equal(a.Value, b.Value) {
		d = append(d, fmt.Sprintf("value %.40q (want %.40q)", a.Value, b.Value))
	}
	if !a.Timestamp.Equal(b.Timestamp) {
		d = append(d, fmt.Sprintf("timestamp %d (want %d)", a.Timestamp.UnixMilli(), b.Timestamp.UnixMilli()))
	}
	same := len(a.Headers) == len(b.Headers)
	for i := 0; same && i < len(a.Headers); i++ {
		same = a.Headers[i].Key == b.Headers[i].Key && bytes.Equal(a.Headers[i].Value, b.Headers[i].Value)
	}
	if !same {
		d = append(d, fmt.Sprintf("%d headers (want %d)", len(a.Headers), len(b.Headers)))
	}
	return strings.Join(d, ", ")
}

// TestRandomRecords is the end-to-end fuzz test, seeded (a Go fuzz target
// would start a broker and kdedup for every input): records of random
// shape fed through one running kdedup on three brokers and checked
// exactly against the model (e.verify). Random headers (the key and scope
// headers or others, a lower-case spelling, dedup.* names, repeated, empty
// values, invalid UTF-8, over-long keys), random values (nil, empty,
// binary, JSON with the key, scope, fingerprint and compare fields present
// or missing, holding strings with escapes and invalid UTF-8, numbers in
// other spellings, booleans, null, objects, arrays, repeated members, odd
// white space, truncated), keys from a small pool so that copies collide,
// copies of earlier records (exact, re-timed, with a header or the value
// changed), timestamps that run late and jump past the ttl, random Kafka
// keys and partitions. KDEDUP_CRASH_SEED reruns a seed;
// KDEDUP_RANDOM_RECORDS sets how many records (default 5,000).
func TestRandomRecords(t *testing.T) {
	e := fakeSetup(t, threeBrokers)
	seed := testSeed(t)
	n := 5000
	if s := os.Getenv("KDEDUP_RANDOM_RECORDS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("KDEDUP_RANDOM_RECORDS=%q: want a number of records", s)
		}
	}
	in := start(t, e.config(t, "random", ""))
	g := newRandomRecords(e.tp, seed)
	pcl := hostileProducer(t, e)
	const chunk = 200
	for sent := 0; sent < n; sent += chunk {
		recs := make([]*kgo.Record, 0, chunk)
		for i := sent; i < min(n, sent+chunk); i++ {
			recs = append(recs, g.next())
		}
		if err := pcl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatalf("seed %d: producing: %v", seed, err)
		}
	}
	rep := e.verify(t, n)
	in.running(t, fmt.Sprintf("(seed %d)", seed))
	if !rep.OK() {
		t.Fatalf("seed %d: %v\nkdedup's goroutines and log: %s", seed, rep, in.dump())
	}
	in.stop(t)
	t.Logf("random records: %v", rep)
	for _, x := range []string{"first_seen", "duplicate", "conflict", "invalid_key", "missing_key", "malformed"} {
		if rep.ByReason[x] == 0 {
			t.Errorf("seed %d: no record was decided %s: %v", seed, x, rep)
		}
	}
}

// randomRecords generates TestRandomRecords' records.
type randomRecords struct {
	tp    *e2e.Topics
	rng   *rand.Rand
	clock time.Time
	sent  []*kgo.Record
	keys  []string // the pool keys are drawn from
	uuids []string
}

func newRandomRecords(tp *e2e.Topics, seed uint64) *randomRecords {
	g := &randomRecords{tp: tp, rng: rand.New(rand.NewPCG(seed, 11)), clock: time.Now().Add(-2 * time.Hour).Truncate(time.Millisecond)}
	for i := 0; i < 40; i++ {
		g.keys = append(g.keys, fmt.Sprintf("key-%d", i))
		g.uuids = append(g.uuids, randomUUID(g.rng))
	}
	g.keys = append(g.keys, "", " ", strings.Repeat("k", 64), strings.Repeat("k", 65), "\xff\xfe", "caf\xc3\xa9", "a\x00b", "1e3", "1000", "true")
	g.uuids = append(g.uuids, strings.ToUpper(g.uuids[0]), "{"+g.uuids[1]+"}", "not-a-uuid", "")
	return g
}

func (g *randomRecords) pick(xs []string) string { return xs[g.rng.IntN(len(xs))] }

func (g *randomRecords) next() *kgo.Record {
	rng := g.rng
	g.clock = g.clock.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
	var r *kgo.Record
	if len(g.sent) > 0 && rng.IntN(100) < 40 {
		orig := g.sent[len(g.sent)-1-rng.IntN(min(len(g.sent), 200))]
		c := *orig
		c.Headers = append([]kgo.RecordHeader(nil), orig.Headers...)
		r = &c
		switch q := rng.IntN(10); {
		case q < 5: // an exact copy, re-timed below
		case q < 7 && len(r.Headers) > 0: // a header changed or dropped
			i := rng.IntN(len(r.Headers))
			if rng.IntN(2) == 0 {
				r.Headers = append(r.Headers[:i:i], r.Headers[i+1:]...)
			} else {
				r.Headers[i].Value = g.headerValue(r.Headers[i].Key)
			}
		case q < 9: // the value changed
			r.Value = g.value(r.Topic)
		default: // a byte of the value changed
			if len(r.Value) > 0 {
				r.Value = append([]byte(nil), r.Value...)
				r.Value[rng.IntN(len(r.Value))] ^= byte(1 + rng.IntN(255))
			}
		}
	} else {
		topic := g.tp.PushInput
		if rng.IntN(2) == 0 {
			topic = g.tp.OrderInput
		}
		r = &kgo.Record{Topic: topic, Partition: int32(rng.IntN(e2e.Partitions))}
		switch rng.IntN(4) {
		case 0:
		case 1:
			r.Key = []byte{}
		default:
			r.Key = []byte(g.pick(g.keys))
		}
		names := []string{"Idempotency-Key", "X-Client-Token", "tenant-id", "idempotency-key", "dedup.reason", "dedup.key", "x-other"}
		for i := rng.IntN(6); i > 0; i-- {
			name := g.pick(names)
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: name, Value: g.headerValue(name)})
		}
		r.Value = g.value(topic)
		g.sent = append(g.sent, r)
	}
	switch q := rng.IntN(1000); {
	case q < 895:
		r.Timestamp = g.clock
	case q < 995: // late, up to five minutes
		r.Timestamp = g.clock.Add(-time.Duration(rng.IntN(300_000)) * time.Millisecond)
	default: // past the ttls: the clock jumps
		g.clock = g.clock.Add(e2e.OrderTTL + time.Duration(rng.IntN(60_000))*time.Millisecond)
		r.Timestamp = g.clock
	}
	c := *r
	c.Headers = append([]kgo.RecordHeader(nil), r.Headers...)
	return &c
}

// headerValue is a random value for header name.
func (g *randomRecords) headerValue(name string) []byte {
	switch q := g.rng.IntN(10); {
	case q < 1:
		return nil
	case q < 2:
		return []byte{}
	case q < 3:
		return randomBytes(g.rng, g.rng.IntN(80))
	}
	switch name {
	case "X-Client-Token":
		return []byte(g.pick(g.uuids))
	case "tenant-id":
		return []byte(g.pick([]string{"t1", "t2", "", "\xff", "\xfe"}))
	}
	return []byte(g.pick(g.keys))
}

// value is a random value for topic's stream.
func (g *randomRecords) value(topic string) []byte {
	rng := g.rng
	switch q := rng.IntN(100); {
	case q < 4:
		return nil
	case q < 8:
		return []byte{}
	case q < 14:
		return randomBytes(rng, rng.IntN(200))
	}
	var members []string
	add := func(name, v string) { members = append(members, strconv.Quote(name)+g.space()+":"+g.space()+v) }
	if topic == g.tp.PushInput {
		if rng.IntN(2) == 0 {
			inner := []string{}
			if rng.IntN(4) > 0 {
				inner = append(inner, `"resubmitCheckKey":`+g.scalar(g.keys))
			}
			data := "{" + strings.Join(inner, ",") + "}"
			if rng.IntN(8) == 0 {
				data = g.pick([]string{"[]", "null", `"x"`, "1"})
			}
			add("data", data)
		}
		for _, f := range []string{"user_id", "template_id", "body"} {
			if rng.IntN(3) > 0 {
				add(f, g.scalar([]string{"1", "welcome", "hi"}))
			}
		}
	} else {
		if rng.IntN(3) > 0 {
			add("order_id", g.scalar(g.uuids))
		}
		if rng.IntN(4) > 0 {
			add("tenant_id", g.scalar([]string{"t1", "t2", "\xff", "\xfe"}))
		}
		for _, f := range []string{"amount", "currency"} {
			if rng.IntN(4) > 0 {
				add(f, g.scalar([]string{"1", "2", "EUR"}))
			}
		}
	}
	if rng.IntN(4) == 0 {
		add("extra", g.scalar([]string{"x"}))
	}
	if rng.IntN(10) == 0 && len(members) > 0 { // a repeated member
		members = append(members, members[rng.IntN(len(members))])
	}
	rng.Shuffle(len(members), func(i, j int) { members[i], members[j] = members[j], members[i] })
	v := g.space() + "{" + strings.Join(members, ","+g.space()) + "}" + g.space()
	if rng.IntN(15) == 0 { // truncated: not JSON
		v = v[:rng.IntN(len(v))]
	}
	return []byte(v)
}

// space is random JSON white space, mostly none.
func (g *randomRecords) space() string {
	if g.rng.IntN(4) > 0 {
		return ""
	}
	return g.pick([]string{" ", "\n", "\t ", "\r\n"})
}

// scalar is a random JSON value: mostly a string from pool, spelled
// plainly or with escapes, else another kind of value.
func (g *randomRecords) scalar(pool []string) string {
	s := g.pick(pool)
	switch q := g.rng.IntN(20); {
	case q < 12:
		return `"` + s + `"` // raw: invalid UTF-8 and NUL stay invalid or get refused as JSON
	case q < 14:
		return strconv.Quote(s)
	case q < 15: // \u escapes of every rune
		var b strings.Builder
		b.WriteByte('"')
		for _, c := range s {
			fmt.Fprintf(&b, `\u%04x`, c)
		}
		b.WriteByte('"')
		return b.String()
	case q < 16:
		return g.pick([]string{"1e3", "1000", "-0", "1.50", "0"})
	case q < 17:
		return g.pick([]string{"true", "false"})
	case q < 18:
		return "null"
	case q < 19:
		return `{"a":` + strconv.Quote(s) + `}`
	default:
		return `[` + strconv.Quote(s) + `]`
	}
}
