package producer

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func admin(t *testing.T, brokers ...string) *kadm.Client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RetryTimeout(2*time.Second), kgo.MetadataMinAge(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// waitPartitions waits until the broker lists topic with n partitions (the
// client's metadata cache may lag a creation by its minimum age).
func waitPartitions(t *testing.T, adm *kadm.Client, topic string, n int32) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		details, err := adm.ListTopics(context.Background())
		got := len(details[topic].Partitions)
		if err == nil && got == int(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d partitions on the broker (%v), want %d", topic, got, err, n)
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a condition, not a stand-in for one
	}
}

func TestEnsureTopics(t *testing.T) {
	c := kfake.MustCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "push-events"), kfake.SeedTopics(2, "order-events"), kfake.SeedTopics(7, "order-events.deduped"))
	defer c.Close()
	adm := admin(t, c.ListenAddrs()...)
	ctx := context.Background()
	plan := TopicPlan{
		Streams: []StreamTopics{{Input: "push-events", Output: "push-events.deduped"}, {Input: "order-events", Output: "order-events.deduped"}, {Input: "new-events", Output: "new-events.deduped"}},
		Audit:   "dedup.audit", Changelog: "kdedup.changelog", CreateInputs: 3,
	}
	parts, err := EnsureTopics(ctx, adm, plan, c.ListenAddrs(), 10*time.Second, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	want := Partitions{"push-events": 4, "push-events.deduped": 4, "order-events": 2, "order-events.deduped": 7, "new-events": 3, "new-events.deduped": 3, "dedup.audit": 4, "kdedup.changelog": 4}
	for topic, n := range want {
		if parts[topic] != n {
			t.Errorf("%s: %d partitions reported, want %d", topic, parts[topic], n)
		}
	}
	for topic, n := range want {
		waitPartitions(t, adm, topic, n)
	}
	limits, err := TopicLimits(ctx, adm, 5*time.Second, "kdedup.changelog", "dedup.audit")
	if err != nil {
		t.Fatal(err)
	}
	if !limits["kdedup.changelog"].Compacted || limits["dedup.audit"].Compacted {
		t.Errorf("the changelog must be compacted and the audit not: %+v", limits)
	}
	// Idempotent: a second run (another instance) changes nothing.
	if again, err := EnsureTopics(ctx, adm, plan, c.ListenAddrs(), 10*time.Second, zerolog.Nop()); err != nil || len(again) != len(parts) {
		t.Fatalf("second run: %v, %v", again, err)
	}
}

func TestEnsureTopicsWaitsForInputs(t *testing.T) {
	c := kfake.MustCluster(kfake.NumBrokers(1))
	defer c.Close()
	adm := admin(t, c.ListenAddrs()...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := EnsureTopics(ctx, adm, TopicPlan{Streams: []StreamTopics{{Input: "late", Output: "late.deduped"}}, Audit: "a"}, c.ListenAddrs(), 5*time.Second, zerolog.Nop())
		done <- err
	}()
	if _, err := adm.CreateTopics(ctx, 2, 1, nil, "late"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitPartitions(t, adm, "late.deduped", 2)
}

func TestEnsureTopicsNamesDeadBrokers(t *testing.T) {
	adm := admin(t, "127.0.0.1:1")
	start := time.Now()
	_, err := EnsureTopics(context.Background(), adm, TopicPlan{Streams: []StreamTopics{{Input: "a", Output: "b"}}}, []string{"127.0.0.1:1"}, 3*time.Second, zerolog.Nop())
	if !errors.Is(err, ErrBrokers) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("error %v does not name the broker", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("gave up after %v", d)
	}
}

func TestLimitsOf(t *testing.T) {
	const h = time.Hour
	for _, tc := range []struct {
		name string
		cfg  map[string]string
		want Limits
	}{
		{"kafka 4 defaults", map[string]string{"max.message.bytes": "1048588", "message.timestamp.type": "CreateTime", "message.timestamp.before.max.ms": "9223372036854775807", "message.timestamp.after.max.ms": "3600000", "cleanup.policy": "delete"},
			Limits{MaxMessageBytes: 1048588, TimestampAfter: h}},
		{"kafka 3.9 defaults", map[string]string{"max.message.bytes": "1048588", "message.timestamp.difference.max.ms": "9223372036854775807", "message.timestamp.before.max.ms": "9223372036854775807", "message.timestamp.after.max.ms": "9223372036854775807"},
			Limits{MaxMessageBytes: 1048588}},
		{"kafka 3.5 difference", map[string]string{"message.timestamp.difference.max.ms": "7200000"}, Limits{TimestampBefore: 2 * h, TimestampAfter: 2 * h}},
		{"before and after", map[string]string{"message.timestamp.before.max.ms": "60000", "message.timestamp.after.max.ms": "1000"}, Limits{TimestampBefore: time.Minute, TimestampAfter: time.Second}},
		{"log append time", map[string]string{"message.timestamp.type": "LogAppendTime", "message.timestamp.after.max.ms": "1000", "max.message.bytes": "2048"}, Limits{MaxMessageBytes: 2048}},
		{"compacted", map[string]string{"cleanup.policy": "compact,delete"}, Limits{Compacted: true}},
		{"garbage", map[string]string{"max.message.bytes": "lots", "message.timestamp.after.max.ms": "-5"}, Limits{}},
		{"nothing", nil, Limits{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := limitsOf(tc.cfg); got != tc.want {
				t.Fatalf("limitsOf = %+v, want %+v", got, tc.want)
			}
		})
	}
	// The batch size allows for franz-go's count of the batch's length
	// prefix: a uvarint of the batch length + 1.
	for _, tc := range []struct{ max, batch int32 }{{0, DefaultMaxMessageBytes}, {5, 6}, {126, 127}, {127, 129}, {1048588, 1048591}, {math.MaxInt32, math.MaxInt32}} {
		if got := (Limits{MaxMessageBytes: tc.max}).BatchBytes(); got != tc.batch {
			t.Errorf("BatchBytes of max.message.bytes %d = %d, want %d", tc.max, got, tc.batch)
		}
	}
}

// TestRefusesAndCulprit: which records a topic's limits refuse up front,
// and which records of a refused batch the refusal is blamed on.
func TestRefusesAndCulprit(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	l := Limits{TimestampBefore: 24 * time.Hour, TimestampAfter: time.Hour, Compacted: true}
	rec := func(dt time.Duration, key string) *kgo.Record {
		r := &kgo.Record{Timestamp: now.Add(dt)}
		if key != "" {
			r.Key = []byte(key)
		}
		return r
	}
	for _, tc := range []struct {
		name    string
		r       *kgo.Record
		refuses error
		culprit map[error]bool // for a batch refused with the key
	}{
		{"now", rec(0, "k"), nil, map[error]bool{kerr.InvalidTimestamp: false, kerr.InvalidRecord: false, kerr.MessageTooLarge: true}},
		{"just inside after", rec(time.Hour-time.Second, "k"), nil, map[error]bool{kerr.InvalidTimestamp: true}},
		{"past after", rec(time.Hour+time.Millisecond, "k"), kerr.InvalidTimestamp, map[error]bool{kerr.InvalidTimestamp: true}},
		{"just inside before", rec(-24*time.Hour+time.Second, "k"), nil, map[error]bool{kerr.InvalidTimestamp: true}},
		{"past before", rec(-25*time.Hour, "k"), kerr.InvalidTimestamp, map[error]bool{kerr.InvalidTimestamp: true}},
		{"an hour old", rec(-time.Hour, "k"), nil, map[error]bool{kerr.InvalidTimestamp: false}},
		{"keyless", rec(0, ""), kerr.InvalidRecord, map[error]bool{kerr.InvalidRecord: true, kerr.InvalidTimestamp: false}},
		{"not a refusal", rec(0, ""), kerr.InvalidRecord, map[error]bool{kerr.RequestTimedOut: false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := l.Refuses(tc.r, now); got != tc.refuses {
				t.Errorf("Refuses = %v, want %v", got, tc.refuses)
			}
			for err, want := range tc.culprit {
				if got := l.Culprit(tc.r, err, now); got != want {
					t.Errorf("Culprit(%v) = %v, want %v", err, got, want)
				}
			}
		})
	}
	// Limits kdedup does not know blame every record of a refused batch:
	// wrongly auditing an innocent record beats aborting forever.
	var unknown Limits
	if unknown.Refuses(rec(100*time.Hour, ""), now) != nil {
		t.Error("unknown limits refused a record")
	}
	if !unknown.Culprit(rec(0, "k"), kerr.InvalidTimestamp, now) || !unknown.Culprit(rec(0, "k"), kerr.InvalidRecord, now) {
		t.Error("unknown limits blamed nobody")
	}
}

func TestTopicLimits(t *testing.T) {
	c := kfake.MustCluster(kfake.NumBrokers(1))
	defer c.Close()
	adm := admin(t, c.ListenAddrs()...)
	ctx := context.Background()
	after, compact, size := "1000", "compact", "2048"
	if _, err := adm.CreateTopics(ctx, 1, 1, map[string]*string{"message.timestamp.after.max.ms": &after, "cleanup.policy": &compact, "max.message.bytes": &size}, "strict"); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateTopics(ctx, 1, 1, nil, "plain"); err != nil {
		t.Fatal(err)
	}
	got, err := TopicLimits(ctx, adm, 5*time.Second, "strict", "plain")
	if err != nil {
		t.Fatal(err)
	}
	if want := (Limits{MaxMessageBytes: 2048, TimestampAfter: time.Second, Compacted: true}); got["strict"] != want {
		t.Errorf("strict: %+v, want %+v", got["strict"], want)
	}
	if got["plain"].Compacted || got["plain"].MaxMessageBytes <= 0 {
		t.Errorf("plain: %+v", got["plain"])
	}
	start := time.Now()
	if _, err := TopicLimits(ctx, adm, 300*time.Millisecond, "missing"); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("a missing topic: %v", err)
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Fatal("a missing topic was not retried until the timeout")
	}
}

// TestRecordBatchBytes: RecordBatchBytes is the size the broker and
// franz-go judge a record by, and BatchBytes lets franz-go send exactly
// what the topic takes: a record of max.message.bytes passes, one byte
// more is refused. Before BatchBytes allowed for franz-go's count of the
// batch's length prefix, franz-go refused records of the last 3 or 4
// bytes below the limit itself, and kdedup audited as too_large
// first-seen records their output takes.
func TestRecordBatchBytes(t *testing.T) {
	c := kfake.MustCluster(kfake.NumBrokers(1))
	defer c.Close()
	adm := admin(t, c.ListenAddrs()...)
	const limit = 2048
	size := strconv.Itoa(limit)
	if _, err := adm.CreateTopics(context.Background(), 1, 1, map[string]*string{"max.message.bytes": &size}, "small"); err != nil {
		t.Fatal(err)
	}
	waitPartitions(t, adm, "small", 1)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerLinger(0),
		kgo.ProducerBatchMaxBytes(Limits{MaxMessageBytes: limit}.BatchBytes()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// franz-go learns the broker's produce version with its first
	// request: until then it counts the longest prefix.
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "small"}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name string
		r    *kgo.Record
		grow func(r *kgo.Record)
	}{
		{"value", &kgo.Record{Topic: "small", Value: []byte{}}, func(r *kgo.Record) { r.Value = append(r.Value, byte(rng.Uint32())) }},
		{"key and headers", &kgo.Record{Topic: "small", Key: []byte("k"), Headers: []kgo.RecordHeader{{Key: "a"}, {Key: "b", Value: []byte{}}}},
			func(r *kgo.Record) { r.Headers[1].Value = append(r.Headers[1].Value, byte(rng.Uint32())) }},
	} {
		for RecordBatchBytes(tc.r) < limit {
			tc.grow(tc.r)
		}
		if got := RecordBatchBytes(tc.r); got != limit {
			t.Fatalf("%s: cannot build a record of %d bytes: %d", tc.name, limit, got)
		}
		if err := cl.ProduceSync(context.Background(), tc.r).FirstErr(); err != nil {
			t.Errorf("%s: a record of exactly max.message.bytes: %v", tc.name, err)
		}
		tc.grow(tc.r)
		if err := cl.ProduceSync(context.Background(), tc.r).FirstErr(); !errors.Is(err, kerr.MessageTooLarge) {
			t.Errorf("%s: a record of %d bytes: %v, want MESSAGE_TOO_LARGE", tc.name, RecordBatchBytes(tc.r), err)
		}
		if err := (Limits{MaxMessageBytes: limit}).Refuses(tc.r, time.Now()); !errors.Is(err, kerr.MessageTooLarge) {
			t.Errorf("%s: Refuses a record one byte too large: %v", tc.name, err)
		}
	}
}
