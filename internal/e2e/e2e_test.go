package e2e

import (
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestModel checks the oracle itself on hand-made records: the settings
// that the end-to-end configuration turns on (field fingerprint, compare,
// refresh, an explicit lateness) decide as the configuration reference
// says.
func TestModel(t *testing.T) {
	tp := NewTopics("")
	t0 := time.UnixMilli(1_700_000_000_000)
	push := func(ts time.Duration, value string, hdrs ...string) *kgo.Record {
		r := &kgo.Record{Topic: tp.PushInput, Value: []byte(value), Timestamp: t0.Add(ts)}
		for i := 0; i+1 < len(hdrs); i += 2 {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: hdrs[i], Value: []byte(hdrs[i+1])})
		}
		return r
	}
	const id = "0f8fad5b-d9cb-469f-a165-70867728950e"
	order := func(ts time.Duration, value string) *kgo.Record {
		return &kgo.Record{Topic: tp.OrderInput, Value: []byte(value), Timestamp: t0.Add(ts)}
	}
	o := func(amount, extra string) string {
		return `{"tenant_id":"t","order_id":"` + id + `","amount":` + amount + `,"currency":"EUR"` + extra + `}`
	}
	type step struct {
		r      *kgo.Record
		reason string
		first  int // index of the first-seen step for duplicate and conflict
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"fingerprint: absent field hashes like null, white space ignored, value bytes compared", []step{
			{push(0, `{"user_id":1,"body":"b"}`), "first_seen", 0},
			{push(time.Second, `{"user_id":1,"body":"b"}`), "duplicate", 0},
			{push(2*time.Second, `{"template_id":null,"user_id":1,"body":"b"}`), "conflict", 0},
			{push(3*time.Second, ` { "user_id": 1, "body": "b"}`+"\n"), "conflict", 0},
			{push(4*time.Second, `{"user_id":2,"body":"b"}`), "first_seen", 0},
			{push(5*time.Second, `{"user_id":1,"body":"b"}`, "tenant-id", "x"), "first_seen", 0},
			{push(6*time.Second, `{"user_id":1,"body":"b","data":{"resubmitCheckKey":""}}`), "conflict", 0},
			{push(7*time.Second, `{"user_id":1,"body":"b"`), "malformed", 0},
		}},
		{"lateness: retired once the watermark reaches expiry + lateness", []step{
			{push(0, `{"a":1}`, "Idempotency-Key", "k"), "first_seen", 0},
			{push(PushTTL-time.Millisecond, `{"a":1}`, "Idempotency-Key", "k"), "duplicate", 0},
			{push(PushTTL+PushLateness-time.Millisecond, `{}`, "Idempotency-Key", "other"), "first_seen", 0},
			{push(time.Minute, `{"a":1}`, "Idempotency-Key", "k"), "duplicate", 0},
			{push(PushTTL+PushLateness, `{}`, "Idempotency-Key", "other2"), "first_seen", 0},
			{push(2*time.Minute, `{"a":1}`, "Idempotency-Key", "k"), "first_seen", 0},
			{push(3*time.Minute, `{"a":1}`, "Idempotency-Key", "k"), "duplicate", 5},
		}},
		{"window edge: live up to first-seen + ttl, exclusive", []step{
			{push(0, `{"a":1}`, "Idempotency-Key", "k"), "first_seen", 0},
			{push(PushTTL-time.Millisecond, `{"a":2}`, "Idempotency-Key", "k"), "conflict", 0},
			{push(PushTTL, `{"a":1}`, "Idempotency-Key", "k"), "first_seen", 0},
		}},
		{"compare and refresh", []step{
			{order(0, o("5", "")), "first_seen", 0},
			{order(time.Minute, o("5", `,"retry":1`)), "duplicate", 0},
			{order(2*time.Minute, " "+o("5", "")), "duplicate", 0},
			{order(3*time.Minute, o("6", "")), "conflict", 0},
			{order(15*time.Minute, o("5", "")), "duplicate", 0},   // expiry now 35m
			{order(30*time.Minute, o("7", "")), "conflict", 0},    // no refresh
			{order(34*time.Minute, o("5", "")), "duplicate", 0},   // live by the refresh at 15m; expiry 54m
			{order(54*time.Minute, o("5", "")), "first_seen", 0},  // the first outside
			{order(54*time.Minute+1, o("5", "")), "duplicate", 7}, // and a new window
			{order(55*time.Minute, `{"tenant_id":"t","order_id":null}`), "missing_key", 0},
			{order(55*time.Minute, `{"tenant_id":"t","order_id":""}`), "missing_key", 0},
			{order(55*time.Minute, `{"tenant_id":"t","order_id":"nope"}`), "invalid_key", 0},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tp.NewModel()
			for i, s := range tc.steps {
				s.r.Offset = int64(i)
				got := m.Decide(s.r)
				if got.Reason != s.reason {
					t.Fatalf("step %d (%s at %v): %s, want %s", i, s.r.Value, s.r.Timestamp.Sub(t0), got.Reason, s.reason)
				}
				if s.reason == "duplicate" || s.reason == "conflict" {
					want := tc.steps[s.first].r
					if got.FirstTS != want.Timestamp.UnixMilli() {
						t.Fatalf("step %d: first seen at %d, want step %d's %d", i, got.FirstTS, s.first, want.Timestamp.UnixMilli())
					}
				}
			}
		})
	}
}

// TestWorkloadReaches runs a workload through the model alone and requires
// every decision and every Exercised counter, so that the end-to-end tests
// using it cannot quietly stop covering a setting.
func TestWorkloadReaches(t *testing.T) {
	tp := NewTopics("")
	w := tp.NewWorkload(1, 20_000)
	m := tp.NewModel()
	offsets := map[string]int64{}
	reasons := map[string]int{}
	for i := 0; i < 20_000; i++ {
		r := w.Next()
		h := fnv.New32a()
		h.Write(r.Key)
		r.Partition = int32(h.Sum32() % Partitions)
		k := r.Topic + string(rune('0'+r.Partition))
		r.Offset = offsets[k]
		offsets[k]++
		reasons[m.Decide(r).Reason]++
	}
	t.Logf("reasons %v, exercised %v", reasons, m.Exercised)
	for _, r := range []string{"first_seen", "duplicate", "conflict", "invalid_key", "missing_key", "malformed"} {
		if reasons[r] == 0 {
			t.Errorf("no %s", r)
		}
	}
	for _, x := range []string{ExFingerprint, ExRetired, ExRefreshed, ExKeptLive, ExCompared, ExEdge} {
		if m.Exercised[x] == 0 {
			t.Errorf("never %s", x)
		}
	}
}

// TestCheckCatches feeds Check the outputs and audit records a correct
// kdedup would write for a workload, then each with one thing changed: an
// audit record's value, key, timestamp or an original header, or its
// fingerprint key. The untouched run must pass and every changed one fail.
func TestCheckCatches(t *testing.T) {
	tp := NewTopics("")
	w := tp.NewWorkload(3, 3_000)
	m := tp.NewModel()
	var inputs, outputs, audits []*kgo.Record
	offsets := map[int32]int64{}
	for i := 0; i < 3_000; i++ {
		r := w.Next()
		r.Partition = int32(i % Partitions)
		r.Offset = offsets[r.Partition]
		offsets[r.Partition]++
		inputs = append(inputs, r)
		e := m.Decide(r)
		out := clone(r)
		out.Partition = r.Partition
		if e.Reason == "first_seen" {
			out.Topic = tp.PushOutput
			if r.Topic == tp.OrderInput {
				out.Topic = tp.OrderOutput
			}
			out.Offset = int64(len(outputs))
			outputs = append(outputs, out)
			continue
		}
		out.Topic = tp.Audit
		key := e.Key
		if e.FP != "" {
			h := fnv.New128a()
			h.Write([]byte(e.FP))
			key = "fp:" + hex.EncodeToString(h.Sum(nil))
		}
		add := func(k, v string) { out.Headers = append(out.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)}) }
		add("dedup.reason", e.Reason)
		add("dedup.stream", e.Stream)
		if key != "" {
			add("dedup.key", key)
		}
		add("dedup.source", fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset))
		if e.First != "" {
			add("dedup.first", e.First)
			add("dedup.first_ts", strconv.FormatInt(e.FirstTS, 10))
		}
		audits = append(audits, out)
	}
	if rep := tp.Check(inputs, outputs, audits); !rep.OK() {
		t.Fatalf("a correct run fails: %v", rep)
	}
	find := func(pred func(*kgo.Record) bool) *kgo.Record {
		for _, a := range audits {
			if pred(a) {
				return a
			}
		}
		t.Fatal("no such audit record")
		return nil
	}
	fingerprinted := func(a *kgo.Record) bool {
		k, _ := header(a, "dedup.key")
		return strings.HasPrefix(k, "fp:")
	}
	for _, tc := range []struct {
		name   string
		pick   func(*kgo.Record) bool
		change func(*kgo.Record)
	}{
		{"value", func(*kgo.Record) bool { return true }, func(a *kgo.Record) { a.Value = append(a.Value, ' ') }},
		{"key", func(*kgo.Record) bool { return true }, func(a *kgo.Record) { a.Key = []byte("other") }},
		{"timestamp", func(*kgo.Record) bool { return true }, func(a *kgo.Record) { a.Timestamp = a.Timestamp.Add(time.Millisecond) }},
		{"header dropped", func(a *kgo.Record) bool {
			return a.Topic == tp.Audit && len(a.Headers) > 0 && a.Headers[0].Key == "tenant-id"
		},
			func(a *kgo.Record) { a.Headers = a.Headers[1:] }},
		{"header added", func(*kgo.Record) bool { return true }, func(a *kgo.Record) {
			a.Headers = append(a.Headers, kgo.RecordHeader{Key: "x", Value: []byte("y")})
		}},
		{"fingerprint key", fingerprinted, func(a *kgo.Record) {
			for i := range a.Headers {
				if a.Headers[i].Key == "dedup.key" {
					a.Headers[i].Value = []byte("fp:00000000000000000000000000000000")
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := find(tc.pick)
			saved := *a
			saved.Headers = append([]kgo.RecordHeader(nil), a.Headers...)
			tc.change(a)
			defer func() { *a = saved }()
			rep := tp.Check(inputs, outputs, audits)
			if rep.OK() || rep.Wrong == 0 {
				t.Fatalf("a changed audit record passes: %v", rep)
			}
			t.Log(rep.Problems[0])
		})
	}
}
