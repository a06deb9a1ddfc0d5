package producer

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/dedup"
)

// TestKeyPartition: OutputPartition partitions keyed records as Kafka's
// Java default partitioner does, toPositive(murmur2(key)) % n, checked
// with Kafka's own murmur2 test vectors (clients UtilsTest.testMurmur2)
// through franz-go's partitioner.
func TestKeyPartition(t *testing.T) {
	for in, hash := range map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	} {
		for _, n := range []int32{1, 2, 3, 5, 7, 8, 12, 16, 31, 100, 1000, 1 << 20} {
			r := &kgo.Record{Partition: 0, Key: []byte(in)}
			if got, want := OutputPartition(r, n, n+1), (hash&0x7fffffff)%n; got != want {
				t.Errorf("key %q, %d partitions: partition %d, want %d", in, n, got, want)
			}
		}
	}
	// The shared partitioner must not keep state for keyed records
	// (go test -race): writers of several streams call it at once.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			r := &kgo.Record{Key: []byte("foobar")}
			for range 100 {
				if p := OutputPartition(r, 12, 8); p != (-790332482&0x7fffffff)%12 {
					t.Errorf("concurrent: partition %d", p)
					return
				}
			}
		})
	}
	wg.Wait()
}

func header(r *kgo.Record, k string) (string, int) {
	var v string
	n := 0
	for _, h := range r.Headers {
		if h.Key == k {
			v = string(h.Value)
			n++
		}
	}
	return v, n
}

func TestAudit(t *testing.T) {
	in := &kgo.Record{Topic: "push-events", Partition: 5, Offset: 42, Key: []byte("k"), Value: []byte("v"), Timestamp: kgo.Record{}.Timestamp,
		Headers: []kgo.RecordHeader{{Key: "Idempotency-Key", Value: []byte("abc")}}}
	cases := []struct {
		d      dedup.Decision
		want   map[string]string
		absent []string
	}{
		{dedup.Decision{Reason: dedup.Duplicate, Key: []byte("abc"), Entry: dedup.Entry{Topic: "push-events", Partition: 5, Offset: 7, FirstSeen: 1700000000123}},
			map[string]string{HeaderReason: "duplicate", HeaderStream: "push", HeaderKey: "abc", HeaderSource: "push-events/5/42", HeaderFirst: "push-events/5/7", HeaderFirstTS: "1700000000123"}, nil},
		{dedup.Decision{Reason: dedup.Conflict, Key: []byte("abc"), Entry: dedup.Entry{Topic: "push-events", Partition: 5, Offset: 9, FirstSeen: -1}},
			map[string]string{HeaderReason: "conflict", HeaderFirst: "push-events/5/9", HeaderFirstTS: "-1"}, nil},
		{dedup.Decision{Reason: dedup.MissingKey},
			map[string]string{HeaderReason: "missing_key", HeaderSource: "push-events/5/42"}, []string{HeaderKey, HeaderFirst, HeaderFirstTS}},
		{dedup.Decision{Reason: dedup.InvalidKey, Key: []byte("a-very-long-key")},
			map[string]string{HeaderReason: "invalid_key", HeaderKey: "a-very-long-key"}, []string{HeaderFirst}},
		{dedup.Decision{Reason: dedup.Malformed},
			map[string]string{HeaderReason: "malformed"}, []string{HeaderKey}},
	}
	for _, tc := range cases {
		t.Run(tc.d.Reason.String(), func(t *testing.T) {
			r := Audit(in, "dedup.audit", 3, "push", &tc.d)
			if r.Topic != "dedup.audit" || r.Partition != 2 || string(r.Key) != "k" || string(r.Value) != "v" || r.Timestamp != in.Timestamp {
				t.Fatalf("audit record %+v", r)
			}
			if v, n := header(r, "Idempotency-Key"); v != "abc" || n != 1 || r.Headers[0].Key != "Idempotency-Key" {
				t.Errorf("input headers not kept first and unchanged: %v", r.Headers)
			}
			for k, want := range tc.want {
				if got, n := header(r, k); got != want || n != 1 {
					t.Errorf("%s = %q (%d times), want %q", k, got, n, want)
				}
			}
			for _, k := range tc.absent {
				if _, n := header(r, k); n != 0 {
					t.Errorf("%s present", k)
				}
			}
		})
	}
	if len(in.Headers) != 1 {
		t.Fatal("Audit changed the input's headers")
	}
}

func TestOutputPartition(t *testing.T) {
	in := &kgo.Record{Partition: 5, Key: []byte("foobar")}
	if p := OutputPartition(in, 8, 8); p != 5 {
		t.Errorf("same count: partition %d, want 5", p)
	}
	// Kafka: toPositive(murmur2("foobar")) % 3.
	foobar := int32(-790332482)
	if p, want := OutputPartition(in, 3, 8), (foobar&0x7fffffff)%3; p != want {
		t.Errorf("by key: partition %d, want %d", p, want)
	}
	in.Key = nil
	if p := OutputPartition(in, 3, 8); p != 2 {
		t.Errorf("no key: partition %d, want 5 mod 3", p)
	}
	out := Output(&kgo.Record{Topic: "a", Partition: 1, Key: []byte("k"), Value: []byte("v"), Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("x")}}}, "b", 4, 4)
	if out.Topic != "b" || out.Partition != 1 || string(out.Value) != "v" || len(out.Headers) != 1 {
		t.Errorf("output %+v", out)
	}
}

// BenchmarkOutputPartition is the cost of partitioning one first-seen
// record by key when the output's partition count differs from the
// input's: 32-byte keys, 12 output partitions.
func BenchmarkOutputPartition(b *testing.B) {
	in := &kgo.Record{Partition: 5, Key: []byte("0123456789abcdef0123456789abcdef")}
	b.ReportAllocs()
	var sum int32
	for b.Loop() {
		in.Key[0]++
		sum += OutputPartition(in, 12, 8)
	}
	if sum < 0 {
		b.Fatal(sum)
	}
}

// TestRefusals: which produce errors refuse a record for good, and what is
// audited instead of a refused output and a refused audit record.
func TestRefusals(t *testing.T) {
	in := &kgo.Record{Topic: "push-events", Partition: 1, Offset: 8, Key: []byte("k"), Value: []byte("value"), Timestamp: time.UnixMilli(1700000000123)}
	d := dedup.Decision{Reason: dedup.FirstSeen, Key: []byte("abc")}
	now := time.UnixMilli(1800000000000)
	cases := []struct {
		err          error
		refusal      bool
		reason       string // Refused's dedup.reason
		code         string // dedup.refused_error
		droppedValue bool   // Repaired drops the value
		restamped    bool   // Repaired stamps now
	}{
		{kerr.MessageTooLarge, true, "too_large", "MESSAGE_TOO_LARGE", true, false},
		{fmt.Errorf("wrapped: %w", kerr.RecordListTooLarge), true, "too_large", "RECORD_LIST_TOO_LARGE", true, false},
		{kerr.InvalidTimestamp, true, "refused", "INVALID_TIMESTAMP", false, true},
		{kerr.InvalidRecord, true, "refused", "INVALID_RECORD", false, false},
		{kerr.RequestTimedOut, false, "", "", false, false},
		{kerr.NotLeaderForPartition, false, "", "", false, false},
		{errors.New("connection reset"), false, "", "", false, false},
	}
	for _, tc := range cases {
		t.Run(tc.err.Error(), func(t *testing.T) {
			if got := Refusal(tc.err); got != tc.refusal {
				t.Fatalf("Refusal = %v, want %v", got, tc.refusal)
			}
			if !tc.refusal {
				return
			}
			r := Refused(in, "dedup.audit", 3, "push", "push-events.deduped", &d, tc.err)
			for k, want := range map[string]string{HeaderReason: tc.reason, HeaderRefused: "push-events.deduped", HeaderRefusedError: tc.code, HeaderSource: "push-events/1/8", HeaderKey: "abc"} {
				if got, n := header(r, k); got != want || n != 1 {
					t.Errorf("%s = %q (%d times), want %q", k, got, n, want)
				}
			}
			fixed := Repaired(r, len(in.Headers), tc.err, now, 0)
			if _, n := header(r, HeaderValueDropped); n != 0 || string(r.Value) != "value" {
				t.Fatal("Repaired changed its argument")
			}
			if dropped, n := header(fixed, HeaderValueDropped); tc.droppedValue != (n == 1 && fixed.Value == nil && dropped == "5") {
				t.Errorf("value dropped: %q %q, want dropped=%v", fixed.Value, dropped, tc.droppedValue)
			}
			if orig, n := header(fixed, HeaderOriginalTS); tc.restamped != (n == 1 && fixed.Timestamp.Equal(now) && orig == "1700000000123") {
				t.Errorf("timestamp %v original %q, want restamped=%v", fixed.Timestamp, orig, tc.restamped)
			}
			if !tc.restamped && !fixed.Timestamp.Equal(in.Timestamp) {
				t.Errorf("timestamp changed to %v", fixed.Timestamp)
			}
		})
	}
}

func TestForwardUnwrap(t *testing.T) {
	in := &kgo.Record{Topic: "push/events", Partition: 4, Offset: 77, Key: []byte("user-1"), Value: []byte("v"), Timestamp: time.UnixMilli(5),
		Headers: []kgo.RecordHeader{{Key: "Idempotency-Key", Value: []byte("k")}}}
	f := Forward(in, "g.push.repartition", 2)
	if f.Topic != "g.push.repartition" || f.Partition != 2 || string(f.Key) != "user-1" || len(in.Headers) != 1 {
		t.Fatalf("forwarded %+v (input headers %v)", f, in.Headers)
	}
	if v, n := header(f, HeaderOrigin); v != "push/events/4/77" || n != 1 {
		t.Fatalf("origin %q (%d)", v, n)
	}
	f.Offset = 1234 // where the repartition topic put it
	u, ok := Unwrap(f)
	if !ok || u.Topic != in.Topic || u.Partition != 4 || u.Offset != 77 || !sameHeaders(u.Headers, in.Headers) || string(u.Value) != "v" {
		t.Fatalf("unwrapped %+v, %v", u, ok)
	}
	for _, bad := range []string{"", "x", "t/1", "t/-1/2", "t/1/x", "/1/2"} {
		r := &kgo.Record{Headers: []kgo.RecordHeader{{Key: HeaderOrigin, Value: []byte(bad)}}}
		if _, ok := Unwrap(r); ok {
			t.Errorf("origin %q unwrapped", bad)
		}
	}
	if _, ok := Unwrap(in); ok {
		t.Error("a record without origin unwrapped")
	}
}

func sameHeaders(a, b []kgo.RecordHeader) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || string(a[i].Value) != string(b[i].Value) {
			return false
		}
	}
	return true
}

func TestForgotten(t *testing.T) {
	e := &dedup.Entry{Topic: "push-events", Partition: 5, Offset: 42, FirstSeen: 1700000000123}
	at := time.UnixMilli(1800000000000)
	for _, tc := range []struct {
		name  string
		scope []string
		want  string
	}{
		{"no scope", nil, `[]`},
		{"scope values", []string{"tenant-1", `a"b`}, `["tenant-1","a\"b"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Forgotten("dedup.audit", 4, "push", 5, []byte("k-1"), tc.scope, e, at)
			if r.Topic != "dedup.audit" || r.Partition != 1 || len(r.Value) != 0 || r.Value == nil || !r.Timestamp.Equal(at) {
				t.Errorf("record %s/%d value %q at %v", r.Topic, r.Partition, r.Value, r.Timestamp)
			}
			got := map[string]string{}
			for _, h := range r.Headers {
				got[h.Key] = string(h.Value)
			}
			want := map[string]string{
				HeaderReason:  ReasonForgotten,
				HeaderStream:  "push",
				HeaderKey:     "k-1",
				HeaderScope:   tc.want,
				HeaderFirst:   "push-events/5/42",
				HeaderFirstTS: "1700000000123",
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("headers %v\nwant    %v", got, want)
			}
		})
	}
}
