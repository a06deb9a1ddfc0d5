package consumer

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/dedup"
	"github.com/kdedup/kdedup/producer"
)

// flushFailClient fails a record in flight while flushing, then the flush
// itself: the outcome of the transaction is unknown.
type flushFailClient struct{ lateClient }

func (c *flushFailClient) Flush(ctx context.Context) error {
	_ = c.lateClient.Flush(ctx)
	return errors.New("flush: context deadline exceeded")
}

// TestEndFlushErrorResets: a flush that fails ends the session; what the
// transaction met must not abort the next session's first transaction.
func TestEndFlushErrorResets(t *testing.T) {
	p := testProcessor(Options{AuditTopic: "dedup.audit", TransactionTimeout: time.Second})
	s := pushStream(t, false)
	c := &flushFailClient{lateClient{fail: "push-events.deduped"}}
	p.txn.open = true
	p.w.Decided(context.Background(), c, &s.out, producer.Coord{Topic: "push-events", Offset: 7}, &kgo.Record{Topic: "push-events", Offset: 7, Value: []byte("v")}, &dedup.Decision{Reason: dedup.FirstSeen})
	if err := p.end(context.Background(), c); err == nil {
		t.Fatal("end after a failed flush returned nil")
	}
	if p.w.Failed() || p.w.Err() != nil || p.txn.open {
		t.Fatalf("after the failed flush: failed=%v err=%v open=%v, want all reset", p.w.Failed(), p.w.Err(), p.txn.open)
	}
}

// TestForwardedRefusalsForgotten: the refusal of a record forwarded to a
// repartition topic is forgotten once the transaction that audited it
// instead commits, like a decided record's (a slow leak otherwise): the
// same coordinates, forwarded again, go to the repartition topic.
func TestForwardedRefusalsForgotten(t *testing.T) {
	p := testProcessor(Options{AuditTopic: "dedup.audit", TransactionTimeout: time.Second, Limits: map[string]producer.Limits{}})
	s := pushStream(t, true)
	rec := func(off int64) *kgo.Record {
		return &kgo.Record{Topic: "push-events", Partition: 1, Offset: off, Timestamp: time.Now(), Value: []byte("{}"),
			Headers: []kgo.RecordHeader{{Key: "Idempotency-Key", Value: []byte("k")}}}
	}
	// The repartition topic refuses offset 5 in a first try, which aborts.
	p.txn.open = true
	fc := &lateClient{fail: "g.push.repartition"}
	p.forward(context.Background(), fc, s, rec(5))
	if err := p.end(context.Background(), fc); err != nil {
		t.Fatal(err)
	}
	if len(fc.ended) != 1 || fc.ended[0] {
		t.Fatalf("first try ended with commit=%v, want an abort", fc.ended)
	}
	var got []*kgo.Record
	c := &recordingClient{got: &got}
	p.txn.open = true
	for off := int64(5); off <= 6; off++ {
		p.forward(context.Background(), c, s, rec(off))
	}
	if len(got) != 2 || got[0].Topic != "dedup.audit" || got[1].Topic != "g.push.repartition" {
		t.Fatalf("produced %v", got)
	}
	if err := p.end(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	// Committed: offset 5 is decided for good; the refusal is forgotten.
	got = got[:0]
	p.txn.open = true
	p.forward(context.Background(), c, s, rec(5))
	if len(got) != 1 || got[0].Topic != "g.push.repartition" {
		t.Fatalf("after the commit, offset 5 produced %v: the refusal was kept", got)
	}
}

// TestCommittedOffsetWithoutCommit pins what behind relies on: franz-go
// reports offset 0 as the committed offset of a partition the group never
// committed, once a record of it was polled, and nothing before.
func TestCommittedOffsetWithoutCommit(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	prod, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic("t"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Records from offset 3 on: the first record's offset is not 0.
	for i := 0; i < 5; i++ {
		if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte("v")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	adm, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if err := c.DeleteRecords("t", 0, 3); err != nil {
		t.Fatal(err)
	}
	sess, err := kgo.NewGroupTransactSession(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("t"), kgo.DisableFetchSessions(),
		kgo.TransactionalID("g-i"), kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	tc := txnClient{sess}
	p := &Processor{}
	if o, ok := p.committed(tc, tp{"t", 0}); ok {
		t.Fatalf("committed offset %d known before any poll", o)
	}
	var first int64 = -1
	for first < 0 && ctx.Err() == nil {
		sess.PollRecords(ctx, 10).EachRecord(func(r *kgo.Record) {
			if first < 0 {
				first = r.Offset
			}
		})
	}
	if first != 3 {
		t.Fatalf("first record at %d, want 3", first)
	}
	if o, ok := p.committed(tc, tp{"t", 0}); !ok || o != 0 {
		t.Fatalf("committed offset of a partition never committed: %d (known %v), want 0", o, ok)
	}
}

// unconfirmedClient is a session whose End reports every commit as an
// abort, as franz-go does when EndTxn answers UNKNOWN_SERVER_ERROR (it
// retries as an abort that never reaches the broker), while the group's
// coordinator holds coordinator: the commit landed, or not.
type unconfirmedClient struct {
	lateClient
	known       int64 // the committed offset the session knows
	coordinator int64 // the one the coordinator holds
}

func (c *unconfirmedClient) End(ctx context.Context, _ bool) (bool, error) {
	_ = c.Flush(ctx)
	return false, nil
}

func (c *unconfirmedClient) Committed(string, int32) int64 { return c.known }

func (c *unconfirmedClient) StableOffsets(context.Context, string) (kadm.OffsetResponses, error) {
	var os kadm.Offsets
	os.AddOffset("push-events", 0, c.coordinator, -1)
	r := kadm.OffsetResponses{}
	os.Each(func(o kadm.Offset) {
		r[o.Topic] = map[int32]kadm.OffsetResponse{o.Partition: {Offset: o}}
	})
	return r, nil
}

// TestUnconfirmedCommitIsUnknown: a commit the session reports as aborted
// while the coordinator holds its offsets is an unknown outcome (the
// session is rebuilt and restores from the changelog), never an abort:
// deciding the records again would emit them twice. A real abort (the
// coordinator holds the offsets the session knows) stays an abort.
func TestUnconfirmedCommitIsUnknown(t *testing.T) {
	for _, tc := range []struct {
		name        string
		coordinator int64
		unknown     bool
	}{
		{"commit landed", 8, true},
		{"aborted", 5, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newRestoreFixture(t)
			st, err := f.p.partition(tp{hoInput, 0})
			if err != nil {
				t.Fatal(err)
			}
			c := &unconfirmedClient{known: 5, coordinator: tc.coordinator}
			f.p.txn.open = true
			st.batch = st.part.NewBatch()
			st.next = 8
			err = f.p.end(context.Background(), c)
			if tc.unknown != (err != nil) {
				t.Fatalf("end: %v; want an unknown outcome: %v", err, tc.unknown)
			}
		})
	}
}
