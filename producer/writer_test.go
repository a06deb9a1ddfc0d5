package producer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/dedup"
)

// fakeClient records every produce and completes it with the error its
// fail function gives (nil: success), at the offset of the record's
// position in its topic.
type fakeClient struct {
	got  []*kgo.Record
	fail func(*kgo.Record) error
}

func (c *fakeClient) Produce(_ context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	var n int64
	for _, g := range c.got {
		if g.Topic == r.Topic {
			n++
		}
	}
	c.got = append(c.got, r)
	r.Offset = n
	var err error
	if c.fail != nil {
		err = c.fail(r)
	}
	if promise != nil {
		promise(r, err)
	}
}

var testStream = Stream{Name: "push", Output: "push-events.deduped", OutputPartitions: 3, InputPartitions: 3,
	Repartition: "g.push.repartition", RepartitionPartitions: 3}

func TestWriterRoutes(t *testing.T) {
	w := NewWriter(WriterOptions{AuditTopic: "dedup.audit", AuditPartitions: 3})
	in := &kgo.Record{Topic: "push-events", Partition: 2, Offset: 9, Value: []byte("v")}
	at := Coord{Topic: "push-events", Partition: 2, Offset: 9}
	for _, tc := range []struct {
		reason dedup.Reason
		topic  string
	}{
		{dedup.FirstSeen, "push-events.deduped"},
		{dedup.Duplicate, "dedup.audit"},
		{dedup.Conflict, "dedup.audit"},
		{dedup.InvalidKey, "dedup.audit"},
		{dedup.MissingKey, "dedup.audit"},
		{dedup.Malformed, "dedup.audit"},
	} {
		t.Run(tc.reason.String(), func(t *testing.T) {
			c := &fakeClient{}
			w.Decided(context.Background(), c, &testStream, at, in, &dedup.Decision{Reason: tc.reason})
			if len(c.got) != 1 || c.got[0].Topic != tc.topic || c.got[0].Partition != 2 {
				t.Fatalf("produced %v, want one record to %s/2", c.got, tc.topic)
			}
			if w.Failed() {
				t.Fatalf("failed: %v", w.Err())
			}
		})
	}
}

// TestWriterRefusals: a record its topic refuses fails the transaction
// and is remembered, so that the retry audits it as refused (and an audit
// record the audit topic refused is repaired), until Forget.
func TestWriterRefusals(t *testing.T) {
	w := NewWriter(WriterOptions{AuditTopic: "dedup.audit", AuditPartitions: 3})
	in := &kgo.Record{Topic: "push-events", Partition: 0, Offset: 4, Value: []byte("big")}
	at := Coord{Topic: "push-events", Partition: 0, Offset: 4}
	first := &dedup.Decision{Reason: dedup.FirstSeen}

	refuse := &fakeClient{fail: func(*kgo.Record) error { return kerr.MessageTooLarge }}
	w.Decided(context.Background(), refuse, &testStream, at, in, first)
	if !w.Failed() || !errors.Is(w.Err(), kerr.MessageTooLarge) || !strings.Contains(w.Err().Error(), "push-events/0/4") {
		t.Fatalf("after a refusal: failed=%v err=%v, want the refusal naming the record", w.Failed(), w.Err())
	}
	w.Reset()
	if w.Failed() || w.Err() != nil {
		t.Fatal("Reset kept the failure")
	}

	// The retry: audited as too large; the audit topic refuses that too.
	c := &fakeClient{fail: func(r *kgo.Record) error {
		if r.Value != nil {
			return kerr.MessageTooLarge
		}
		return nil
	}}
	w.Decided(context.Background(), c, &testStream, at, in, first)
	if len(c.got) != 1 || c.got[0].Topic != "dedup.audit" {
		t.Fatalf("retry produced %v, want the audit record", c.got)
	}
	if r, _ := header(c.got[0], HeaderReason); r != ReasonTooLarge {
		t.Fatalf("retry's reason %q, want %s", r, ReasonTooLarge)
	}
	w.Reset()
	// The next retry: the audit record goes without its value.
	c.got = nil
	w.Decided(context.Background(), c, &testStream, at, in, first)
	if len(c.got) != 1 || c.got[0].Value != nil || w.Failed() {
		t.Fatalf("second retry produced %v (failed %v), want the audit record without its value", c.got, w.Err())
	}
	if _, n := header(c.got[0], HeaderValueDropped); n != 1 {
		t.Fatalf("second retry's audit record lacks %s", HeaderValueDropped)
	}

	// Forgotten below the committed offset: the record goes out again.
	w.Forget("push-events", 0, 4)
	c.got = nil
	w.Decided(context.Background(), c, &testStream, at, in, first)
	if c.got[0].Topic != "dedup.audit" {
		t.Fatal("Forget below the offset dropped the refusal")
	}
	w.Forget("push-events", 0, 5)
	c.got, c.fail = nil, nil
	w.Decided(context.Background(), c, &testStream, at, in, first)
	if c.got[0].Topic != "push-events.deduped" {
		t.Fatalf("after Forget past the offset produced %v, want the output", c.got)
	}
}

// TestWriterPredictedRefusal: a record its topic's limits refuse is
// audited without being produced there.
func TestWriterPredictedRefusal(t *testing.T) {
	w := NewWriter(WriterOptions{AuditTopic: "dedup.audit", AuditPartitions: 3,
		Limits: map[string]Limits{"push-events.deduped": {TimestampAfter: time.Minute}}})
	c := &fakeClient{}
	in := &kgo.Record{Topic: "push-events", Offset: 1, Timestamp: time.Now().Add(time.Hour)}
	w.Decided(context.Background(), c, &testStream, Coord{Topic: "push-events", Offset: 1}, in, &dedup.Decision{Reason: dedup.FirstSeen})
	if len(c.got) != 1 || c.got[0].Topic != "dedup.audit" {
		t.Fatalf("produced %v, want the audit record", c.got)
	}
	if r, _ := header(c.got[0], HeaderRefusedError); r != "INVALID_TIMESTAMP" {
		t.Fatalf("refused error %q", r)
	}
}

func TestWriterChangelog(t *testing.T) {
	t.Run("written", func(t *testing.T) {
		w := NewWriter(WriterOptions{AuditTopic: "dedup.audit", ChangelogTopic: "g.changelog", ChangelogPartitions: 2})
		c := &fakeClient{}
		var next []int64
		for i := 0; i < 2; i++ {
			w.Changelog(context.Background(), c, "push-events", 3, []byte("k"), []byte("v"), 0, nil, func(n int64) { next = append(next, n) })
		}
		if len(c.got) != 2 || c.got[0].Topic != "g.changelog" || c.got[0].Partition != 1 {
			t.Fatalf("produced %v, want records to g.changelog/1 (3 mod 2)", c.got)
		}
		if len(next) != 2 || next[0] != 1 || next[1] != 2 {
			t.Fatalf("written called with %v, want [1 2]", next)
		}
	})
	t.Run("failed", func(t *testing.T) {
		w := NewWriter(WriterOptions{AuditTopic: "dedup.audit", ChangelogTopic: "g.changelog", ChangelogPartitions: 2})
		c := &fakeClient{fail: func(*kgo.Record) error { return kerr.NotLeaderForPartition }}
		w.Changelog(context.Background(), c, "push-events", 3, []byte("k"), nil, 0, nil, func(int64) { t.Error("written called for a failed record") })
		if !w.Failed() || !strings.Contains(w.Err().Error(), "changelog of push-events/3") {
			t.Fatalf("err %v, want a changelog failure naming the partition", w.Err())
		}
	})
	t.Run("off", func(t *testing.T) {
		w := NewWriter(WriterOptions{AuditTopic: "dedup.audit"})
		c := &fakeClient{}
		w.Changelog(context.Background(), c, "push-events", 3, []byte("k"), []byte("v"), 0, nil, nil)
		if len(c.got) != 0 || w.Changelogs() {
			t.Fatalf("without a changelog topic produced %v", c.got)
		}
	})
}

// BenchmarkDecided is the Writer's cost per decided record, the client's
// Produce excluded (a client that completes at once).
func BenchmarkDecided(b *testing.B) {
	w := NewWriter(WriterOptions{AuditTopic: "dedup.audit", AuditPartitions: 3})
	c := nopClient{}
	in := &kgo.Record{Topic: "push-events", Partition: 1, Offset: 9, Value: []byte(`{"a":1}`),
		Headers: []kgo.RecordHeader{{Key: "Idempotency-Key", Value: []byte("k-1")}}}
	decisions := []*dedup.Decision{{Reason: dedup.FirstSeen}, {Reason: dedup.Duplicate, Key: []byte("k-1")}}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		w.Decided(context.Background(), c, &testStream, Coord{Topic: "push-events", Partition: 1, Offset: int64(i)}, in, decisions[i%2])
	}
}

type nopClient struct{}

func (nopClient) Produce(_ context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	promise(r, nil)
}

// TestWriterCutsUntilItFits: an audit record the audit topic refuses as
// too large even without its value is cut further at every refusal
// (Repaired's levels) until the topic takes it, whether the Writer knows
// the topic's limit (then the first try fits) or not (one abort a level):
// a record with a huge idempotency key, huge headers and a huge Kafka key
// must never stall its partition by being refused forever. Before the
// levels, such a record (a 1 MB Idempotency-Key header audited
// invalid_key: the header and dedup.key, 2 MB) was retried without its
// value, refused again, forever.
func TestWriterCutsUntilItFits(t *testing.T) {
	big := func(n int) []byte { return []byte(strings.Repeat("x", n)) }
	const limit = 10_000
	in := &kgo.Record{Topic: "push-events", Partition: 1, Offset: 7, Key: big(3000), Value: big(3000),
		Headers: []kgo.RecordHeader{{Key: "Idempotency-Key", Value: big(8000)}, {Key: "tenant-id", Value: []byte("t")}}}
	at := Coord{Topic: "push-events", Partition: 1, Offset: 7}
	for _, tc := range []struct {
		name  string
		key   []byte // the decision's key
		level int    // how far the audit record must be cut
	}{
		{"small key", []byte("k"), 2},               // the Kafka key and the big header must go
		{"huge key", big(9950), 3},                  // dedup.key too
		{"no key", nil, 2},                          // missing_key: nothing to drop at level 3
		{"fits without its value", []byte("k"), -1}, // with a smaller input below
	} {
		for _, known := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/limit known %v", tc.name, known), func(t *testing.T) {
				in := in
				level := tc.level
				if level < 0 {
					c := *in
					c.Headers = c.Headers[1:]
					c.Value = big(limit)
					in, level = &c, 1
				}
				opts := WriterOptions{AuditTopic: "dedup.audit", AuditPartitions: 3}
				if known {
					opts.Limits = map[string]Limits{"dedup.audit": {MaxMessageBytes: limit}}
				}
				w := NewWriter(opts)
				c := &fakeClient{fail: func(r *kgo.Record) error {
					if RecordBatchBytes(r) > limit {
						return kerr.MessageTooLarge
					}
					return nil
				}}
				d := &dedup.Decision{Reason: dedup.InvalidKey, Key: tc.key}
				tries := 0
				for ; tries < 5; tries++ {
					c.got = nil
					w.Decided(context.Background(), c, &testStream, at, in, d)
					if !w.Failed() {
						break
					}
					w.Reset() // the transaction aborted: decided again
				}
				if w.Failed() || len(c.got) != 1 {
					t.Fatalf("still refused after %d tries: %v", tries, w.Err())
				}
				if want := 0; known && tries != want {
					t.Errorf("%d aborts with the audit topic's limit known, want %d", tries, want)
				}
				r := c.got[0]
				if cutLevel(r, 0) != level {
					t.Fatalf("cut to level %d (%d bytes), want %d; headers %v", cutLevel(r, 0), RecordBatchBytes(r), level, names(r))
				}
				if v, _ := header(r, HeaderValueDropped); v != strconv.Itoa(len(in.Value)) || r.Value != nil {
					t.Errorf("%s = %q with a value of %d bytes, want %d and no value", HeaderValueDropped, v, len(r.Value), len(in.Value))
				}
				for k, want := range map[string]string{HeaderReason: "invalid_key", HeaderSource: "push-events/1/7", HeaderStream: "push"} {
					if got, n := header(r, k); got != want || n != 1 {
						t.Errorf("%s = %q (%d times), want %q", k, got, n, want)
					}
				}
				_, nKey := header(r, HeaderKey)
				hasKey := nKey == 1
				switch level {
				case 1:
					if len(r.Headers) != len(in.Headers)+5 || !bytes.Equal(r.Key, in.Key) {
						t.Errorf("without its value only, yet headers %v, key of %d bytes", names(r), len(r.Key))
					}
				case 2, 3:
					if r.Key != nil || hasKey != (level == 2 && tc.key != nil) {
						t.Errorf("stripped to level %d: Kafka key of %d bytes, dedup.key %v; headers %v", level, len(r.Key), hasKey, names(r))
					}
					if v, _ := header(r, HeaderStripped); v != strconv.Itoa(3000+len("Idempotency-Key")+8000+len("tenant-id")+1) {
						t.Errorf("%s = %q", HeaderStripped, v)
					}
					for _, h := range r.Headers {
						if !strings.HasPrefix(h.Key, "dedup.") {
							t.Errorf("stripped record kept the input's header %q", h.Key)
						}
					}
				}
				if v, n := header(r, HeaderKeyDropped); (level == 3) != (n == 1) || (n == 1 && v != strconv.Itoa(len(tc.key))) {
					t.Errorf("%s = %q (%d times) at level %d", HeaderKeyDropped, v, n, level)
				}
			})
		}
	}
}

func names(r *kgo.Record) []string {
	var ns []string
	for _, h := range r.Headers {
		ns = append(ns, h.Key)
	}
	return ns
}

// TestWriterTimestampAndSize: an audit record refused for its timestamp
// and, once restamped, for its size gets both repairs: refusals add up
// rather than replace each other, which would alternate forever.
func TestWriterTimestampAndSize(t *testing.T) {
	w := NewWriter(WriterOptions{AuditTopic: "dedup.audit", AuditPartitions: 3})
	now := time.Now()
	in := &kgo.Record{Topic: "push-events", Offset: 3, Value: []byte(strings.Repeat("v", 100)), Timestamp: now.Add(48 * time.Hour)}
	c := &fakeClient{fail: func(r *kgo.Record) error {
		switch {
		case r.Timestamp.After(time.Now().Add(time.Hour)):
			return kerr.InvalidTimestamp
		case r.Value != nil:
			return kerr.MessageTooLarge
		}
		return nil
	}}
	for tries := 0; ; tries++ {
		if tries == 4 {
			t.Fatalf("still refused: %v", w.Err())
		}
		c.got = nil
		w.Decided(context.Background(), c, &testStream, Coord{Topic: "push-events", Offset: 3}, in, &dedup.Decision{Reason: dedup.MissingKey})
		if !w.Failed() {
			break
		}
		w.Reset()
	}
	r := c.got[0]
	if _, n := header(r, HeaderOriginalTS); n != 1 || r.Value != nil {
		t.Fatalf("want restamped and without its value: %v, value %q", names(r), r.Value)
	}
}
