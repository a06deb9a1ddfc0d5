package audit

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/dedup"
	"github.com/kdedup/kdedup/producer"
)

const (
	inputTopic = "push-events"
	auditTopic = "dedup.audit"
)

// fixture is a kfake cluster with an input topic and an audit topic of two
// partitions each, and clients to fill them.
type fixture struct {
	c     *kfake.Cluster
	plain *kgo.Client // produces input records
	txn   *kgo.Client // produces audit records in transactions
	src   *Source
	start time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	c := kfake.MustCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, inputTopic, auditTopic))
	t.Cleanup(c.Close)
	seeds := kgo.SeedBrokers(c.ListenAddrs()...)
	plain, err := kgo.NewClient(seeds, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(plain.Close)
	txn, err := kgo.NewClient(seeds, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionalID("audit-test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(txn.Close)
	return &fixture{c: c, plain: plain, txn: txn, src: &Source{Opts: []kgo.Opt{seeds}, Timeout: 10 * time.Second}, start: time.Now()}
}

// input produces an input record and returns it with its offset.
func (f *fixture) input(t *testing.T, partition int32, value string, ts time.Time) *kgo.Record {
	t.Helper()
	r := &kgo.Record{Topic: inputTopic, Partition: partition, Key: []byte("order"), Value: []byte(value), Timestamp: ts,
		Headers: []kgo.RecordHeader{{Key: "Idempotency-Key", Value: []byte("from-input")}}}
	if err := f.plain.ProduceSync(context.Background(), r).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return r
}

// decision returns the decision reason of key, first seen as first (nil:
// none).
func decision(reason dedup.Reason, key string, first *kgo.Record) *dedup.Decision {
	d := &dedup.Decision{Reason: reason}
	if key != "" {
		d.Key = []byte(key)
	}
	if first != nil {
		d.Entry = dedup.Entry{Topic: first.Topic, Partition: first.Partition, Offset: first.Offset, FirstSeen: first.Timestamp.UnixMilli()}
	}
	return d
}

// audit produces audit records in one transaction, committed or aborted,
// and returns them with their offsets.
func (f *fixture) audit(t *testing.T, commit bool, rs ...*kgo.Record) []*kgo.Record {
	t.Helper()
	ctx := context.Background()
	if err := f.txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := f.txn.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := f.txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		t.Fatal(err)
	}
	return rs
}

// scenario fills the fixture: per partition, first-seen inputs and audit
// records of duplicates and conflicts, old (3h ago) and recent (10m ago),
// committed, and one aborted transaction of a "ghost" conflict.
type scenario struct {
	first, firstOld               *kgo.Record // first-seen inputs
	oldDup, dup, conflict, binary *kgo.Record // audit records
	missing, forgotten, aborted   *kgo.Record
}

func (f *fixture) scenario(t *testing.T) *scenario {
	t.Helper()
	var s scenario
	old, recent := f.start.Add(-3*time.Hour), f.start.Add(-10*time.Minute)
	s.firstOld = f.input(t, 0, `{"amount":5}`, old)
	oldCopy := f.input(t, 0, `{"amount":5}`, old.Add(time.Second))
	s.first = f.input(t, 0, `{"amount":10,"note":"x"}`, recent)
	dupIn := f.input(t, 0, `{"amount":10,"note":"x"}`, recent.Add(time.Second))
	conflictIn := f.input(t, 0, `{"amount":12,"note":"x"}`, recent.Add(2*time.Second))
	missingIn := f.input(t, 1, `no key here`, recent.Add(3*time.Second))
	binaryIn := f.input(t, 0, "\xff\x00bin", recent.Add(4*time.Second))
	ghostIn := f.input(t, 0, `{"ghost":true}`, recent.Add(5*time.Second))

	s.oldDup = f.audit(t, true, producer.Audit(oldCopy, auditTopic, 2, "push", decision(dedup.Duplicate, "k0", s.firstOld)))[0]
	rs := f.audit(t, true,
		producer.Audit(dupIn, auditTopic, 2, "push", decision(dedup.Duplicate, "k1", s.first)),
		producer.Audit(conflictIn, auditTopic, 2, "push", decision(dedup.Conflict, "k1", s.first)),
		producer.Audit(missingIn, auditTopic, 2, "orders", decision(dedup.MissingKey, "", nil)),
	)
	s.dup, s.conflict, s.missing = rs[0], rs[1], rs[2]
	s.aborted = f.audit(t, false, producer.Audit(ghostIn, auditTopic, 2, "push", decision(dedup.Conflict, "ghost", s.first)))[0]
	s.binary = f.audit(t, true, producer.Audit(binaryIn, auditTopic, 2, "push", decision(dedup.Duplicate, "k2", s.first)))[0]
	// An admin forget, as docs/records.md describes it.
	s.forgotten = f.audit(t, true, &kgo.Record{Topic: auditTopic, Partition: 0, Value: []byte{}, Timestamp: recent.Add(6 * time.Second),
		Headers: []kgo.RecordHeader{
			{Key: producer.HeaderReason, Value: []byte(ReasonForgotten)},
			{Key: producer.HeaderStream, Value: []byte("push")},
			{Key: producer.HeaderKey, Value: []byte("k1")},
			{Key: producer.HeaderFirst, Value: []byte(inputTopic + "/0/2")},
			{Key: producer.HeaderFirstTS, Value: []byte("0")},
		}})[0]
	return &s
}

// tail returns the keys (dedup.key, "-" without) of the records a Tail
// reads, by partition.
func tail(t *testing.T, f *fixture, rg Range) map[int32][]string {
	t.Helper()
	got := map[int32][]string{}
	err := f.src.Tail(context.Background(), auditTopic, rg, func(r *kgo.Record) error {
		got[r.Partition] = append(got[r.Partition], orDash(r, producer.HeaderKey)+":"+orDash(r, producer.HeaderReason))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestTail(t *testing.T) {
	f := newFixture(t)
	f.scenario(t)
	// A transaction still open when the tail starts: read_committed stops
	// before it, and so does the tail, without waiting for it.
	open, err := kgo.NewClient(kgo.SeedBrokers(f.c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionalID("still-open"))
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if err := open.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := open.ProduceSync(context.Background(), &kgo.Record{Topic: auditTopic, Partition: 0, Value: []byte("open"),
		Headers: []kgo.RecordHeader{{Key: producer.HeaderKey, Value: []byte("open")}}}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	defer open.EndTransaction(context.Background(), kgo.TryAbort)

	for _, tc := range []struct {
		name string
		rg   Range
		want map[int32][]string
	}{
		{"from the beginning", Range{}, map[int32][]string{
			0: {"k0:duplicate", "k1:duplicate", "k1:conflict", "k2:duplicate", "k1:forgotten"},
			1: {"-:missing_key"},
		}},
		{"since an hour ago", Range{Since: f.start.Add(-time.Hour)}, map[int32][]string{
			0: {"k1:duplicate", "k1:conflict", "k2:duplicate", "k1:forgotten"},
			1: {"-:missing_key"},
		}},
		{"since after all", Range{Since: f.start.Add(time.Hour)}, map[int32][]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tail(t, f, tc.rg)
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for p, want := range tc.want {
				if strings.Join(got[p], " ") != strings.Join(want, " ") {
					t.Errorf("partition %d: got %v, want %v", p, got[p], want)
				}
			}
		})
	}

	// No consumer group was created, nor offsets committed.
	groups, err := kadm.NewClient(f.plain).ListGroups(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) != 0 {
		t.Fatalf("groups %v exist after reading", groups.Groups())
	}

	// The callback's error ends the tail.
	stop := errors.New("stop")
	if err := f.src.Tail(context.Background(), auditTopic, Range{}, func(*kgo.Record) error { return stop }); err != stop {
		t.Fatalf("Tail = %v, want the callback's error", err)
	}
	if err := f.src.Tail(context.Background(), "no-such-topic", Range{}, nil); err == nil || !strings.Contains(err.Error(), "topic no-such-topic does not exist") {
		t.Fatalf("Tail of a missing topic = %v", err)
	}
}

// TestTailFollow: a following tail shows what is there, then a record
// committed after it started, and ends with its context.
func TestTailFollow(t *testing.T) {
	f := newFixture(t)
	s := f.scenario(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen := make(chan *kgo.Record, 16)
	done := make(chan error, 1)
	go func() {
		done <- f.src.Tail(ctx, auditTopic, Range{Since: f.start.Add(-time.Hour), Follow: true}, func(r *kgo.Record) error {
			seen <- r
			return nil
		})
	}()
	next := func() *kgo.Record {
		t.Helper()
		select {
		case r := <-seen:
			return r
		case err := <-done:
			t.Fatalf("Tail ended: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("no record within 10s")
		}
		return nil
	}
	for range 5 { // k1 duplicate, conflict, k2 duplicate, forgotten, missing_key
		next()
	}
	late := f.input(t, 1, `{"amount":10,"note":"x"}`, time.Now())
	f.audit(t, true, producer.Audit(late, auditTopic, 2, "push", decision(dedup.Duplicate, "late", s.first)))
	if r := next(); header(r, producer.HeaderKey) != "late" {
		t.Fatalf("after the existing records, got %s: %v", header(r, producer.HeaderKey), r)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Tail = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Tail did not end with its context")
	}
	select {
	case r := <-seen:
		t.Fatalf("unexpected record %v", r)
	default:
	}
}

func TestShow(t *testing.T) {
	f := newFixture(t)
	s := f.scenario(t)
	at := func(r *kgo.Record) Coordinates { return Coordinates{r.Topic, r.Partition, r.Offset} }
	text := func(sh *Shown) string {
		var b bytes.Buffer
		if err := sh.WriteText(&b); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	ctx := context.Background()

	t.Run("duplicate", func(t *testing.T) {
		sh, err := f.src.Show(ctx, at(s.dup))
		if err != nil {
			t.Fatal(err)
		}
		if sh.FirstRecord == nil || sh.FirstRecord.Offset != s.first.Offset || string(sh.FirstRecord.Value) != `{"amount":10,"note":"x"}` {
			t.Fatalf("first-seen record %v, %v", sh.FirstRecord, sh.FirstErr)
		}
		out := text(sh)
		for _, want := range []string{"audit record dedup.audit/0/2\n", "    dedup.reason     duplicate\n", "    dedup.first_ts   " + strconv.FormatInt(s.first.Timestamp.UnixMilli(), 10) + " (",
			"first-seen record push-events/0/2\n", "  key      order\n", "values: identical"} {
			if !strings.Contains(out, want) {
				t.Errorf("lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("conflict", func(t *testing.T) {
		sh, err := f.src.Show(ctx, at(s.conflict))
		if err != nil {
			t.Fatal(err)
		}
		if sh.Diff == nil || sh.Diff.Kind != DiffJSON || strings.Join(sh.Diff.Lines, "|") != "~ $.amount: 10 → 12" {
			t.Fatalf("diff %+v", sh.Diff)
		}
		out := text(sh)
		if !strings.Contains(out, "values differ (json diff: first-seen → audit record):\n  ~ $.amount: 10 → 12\n") {
			t.Errorf("text:\n%s", out)
		}
		var b bytes.Buffer
		if err := sh.WriteJSON(&b); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), `"first":"push-events/0/2","first_record":{"topic":"push-events","partition":0,"offset":2,`) ||
			!strings.Contains(b.String(), `"diff":{"kind":"json","lines":["~ $.amount: 10 → 12"]}`) {
			t.Errorf("JSON %s", b.String())
		}
	})
	t.Run("binary duplicate", func(t *testing.T) {
		sh, err := f.src.Show(ctx, at(s.binary))
		if err != nil {
			t.Fatal(err)
		}
		if sh.Diff == nil || sh.Diff.Kind != DiffBytes {
			t.Fatalf("diff %+v", sh.Diff)
		}
	})
	t.Run("missing key names no first", func(t *testing.T) {
		sh, err := f.src.Show(ctx, at(s.missing))
		if err != nil {
			t.Fatal(err)
		}
		if sh.First != nil || sh.Diff != nil || !strings.Contains(text(sh), "first-seen record: none (reason missing_key names none)") {
			t.Fatalf("%+v\n%s", sh, text(sh))
		}
	})
	t.Run("forgotten", func(t *testing.T) {
		sh, err := f.src.Show(ctx, at(s.forgotten))
		if err != nil {
			t.Fatal(err)
		}
		if sh.FirstRecord == nil || sh.Diff != nil {
			t.Fatalf("%+v", sh)
		}
	})
	for _, tc := range []struct {
		name string
		c    Coordinates
		is   error
		msg  string
	}{
		{"aborted", at(s.aborted), ErrNotFound, "dedup.audit/0/"},
		{"past the end", Coordinates{auditTopic, 1, 99}, ErrNotFound, "last stable offset is"},
		{"no such partition", Coordinates{auditTopic, 7, 0}, ErrNotFound, "has no partition 7"},
		{"an input record", at(s.first), ErrNotAudit, "push-events/0/2: not an audit record"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.src.Show(ctx, tc.c)
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Show(%s) = %v, want %v with %q", tc.c, err, tc.is, tc.msg)
			}
		})
	}
	if _, err := f.src.Show(ctx, Coordinates{"no-such-topic", 0, 0}); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Show of a missing topic: %v", err)
	}

	// Retention removes the first-seen records: the audit record is
	// shown, and the first-seen record is said to be gone.
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: inputTopic, Partition: 0, At: s.first.Offset + 1})
	if _, err := kadm.NewClient(f.plain).DeleteRecords(ctx, offs); err != nil {
		t.Fatal(err)
	}
	sh, err := f.src.Show(ctx, at(s.conflict))
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(sh.FirstErr, ErrGone) || sh.FirstRecord != nil || sh.Diff != nil {
		t.Fatalf("first-seen record after retention: %+v", sh)
	}
	if out := text(sh); !strings.Contains(out, "first-seen record push-events/0/2: cannot be shown: push-events/0/2: record is gone (below the partition's start offset: removed by retention); it now starts at offset 3") ||
		!strings.Contains(out, "output topic of stream push may still hold its copy") {
		t.Fatalf("text:\n%s", out)
	}
}
