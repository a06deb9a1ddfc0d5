package consumer

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/config"
	"github.com/kdedup/kdedup/dedup"
	"github.com/kdedup/kdedup/producer"
)

// lateClient completes produces only when flushed, failing those to topic
// fail: a refusal that arrives while the transaction is being ended.
type lateClient struct {
	fail     string
	inFlight []func()
	ended    []bool // the commit argument of each End
}

func (c *lateClient) PollRecords(context.Context, int) kgo.Fetches { return nil }
func (c *lateClient) Begin() error                                 { return nil }
func (c *lateClient) Committed(string, int32) int64                { return -1 }
func (c *lateClient) PauseFetchTopics(...string) []string          { return nil }
func (c *lateClient) ResumeFetchTopics(...string)                  {}
func (c *lateClient) StableOffsets(context.Context, string) (kadm.OffsetResponses, error) {
	return nil, nil
}
func (c *lateClient) Produce(_ context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	c.inFlight = append(c.inFlight, func() {
		var err error
		if r.Topic == c.fail {
			err = kerr.MessageTooLarge
		}
		promise(r, err)
	})
}
func (c *lateClient) Flush(context.Context) error {
	for _, f := range c.inFlight {
		f()
	}
	c.inFlight = nil
	return nil
}
func (c *lateClient) End(ctx context.Context, commit bool) (bool, error) {
	_ = c.Flush(ctx)
	c.ended = append(c.ended, commit)
	return commit, nil
}

// testProcessor returns a Processor for tests that drive its methods
// directly, with a Writer as New would build it.
func testProcessor(opts Options) *Processor {
	p := &Processor{log: zerolog.Nop(), obs: nopObserver{}, parts: map[tp]*partState{}, assigned: map[tp]bool{}, opts: opts}
	p.w = producer.NewWriter(producer.WriterOptions{AuditTopic: opts.AuditTopic, AuditPartitions: 3, Limits: opts.Limits})
	p.txn.reset()
	return p
}

// pushStream returns a stream push (header key) of push-events, whose
// repartition topic, if repartition, is g.push.repartition.
func pushStream(t *testing.T, repartition bool) *streamRun {
	t.Helper()
	rules, err := dedup.Compile(config.Stream{Name: "push", Input: "push-events", TTL: config.Duration(time.Hour), Key: []config.KeySource{{Header: "Idempotency-Key"}}})
	if err != nil {
		t.Fatal(err)
	}
	s := &streamRun{Stream: Stream{Rules: rules, Input: "push-events", Output: "push-events.deduped"}, eng: dedup.NewEngine(rules),
		out: producer.Stream{Name: "push", Output: "push-events.deduped", OutputPartitions: 3, InputPartitions: 3}}
	if repartition {
		s.Repartition, s.out.Repartition, s.out.RepartitionPartitions = "g.push.repartition", "g.push.repartition", 3
	}
	return s
}

// TestEndWaitsForOutcomes: a record that fails only while the transaction
// ends must make it abort (a session's End commits whatever its produces
// did), and the refusal is kept for the retry, which audits the record as
// refused instead of producing it again.
func TestEndWaitsForOutcomes(t *testing.T) {
	p := testProcessor(Options{AuditTopic: "dedup.audit", TransactionTimeout: time.Second})
	s := pushStream(t, false)
	c := &lateClient{fail: "push-events.deduped"}
	at := producer.Coord{Topic: "push-events", Partition: 0, Offset: 7}
	in := &kgo.Record{Topic: "push-events", Offset: 7, Value: []byte("v")}
	first := &dedup.Decision{Reason: dedup.FirstSeen}
	p.txn.open = true
	p.w.Decided(context.Background(), c, &s.out, at, in, first)
	if err := p.end(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if len(c.ended) != 1 || c.ended[0] {
		t.Fatalf("End called with commit=%v: a refused record must abort the transaction", c.ended)
	}
	// The retry: the refusal is remembered, the record audited as too
	// large, and nothing fails: it commits.
	var got []*kgo.Record
	rc := &recordingClient{got: &got}
	p.txn.open = true
	p.w.Decided(context.Background(), rc, &s.out, at, in, first)
	if len(got) != 1 || got[0].Topic != "dedup.audit" {
		t.Fatalf("the retry produced %v, want the record audited: the refusal was not kept", got)
	}
	if err := p.end(context.Background(), rc); err != nil {
		t.Fatal(err)
	}
	if len(rc.ended) != 1 || !rc.ended[0] {
		t.Fatalf("End called with commit=%v, want a commit", rc.ended)
	}
}

// TestForwardRefused: a record its repartition topic would refuse is
// audited as refused by that topic, not forwarded (where it would abort
// every retry).
func TestForwardRefused(t *testing.T) {
	p := testProcessor(Options{AuditTopic: "dedup.audit", Limits: map[string]producer.Limits{"g.push.repartition": {TimestampAfter: time.Minute}}})
	s := pushStream(t, true)
	var got []*kgo.Record
	c := &recordingClient{got: &got}
	rec := func(ts time.Time) *kgo.Record {
		return &kgo.Record{Topic: "push-events", Partition: 1, Offset: 5, Timestamp: ts, Value: []byte("{}"),
			Headers: []kgo.RecordHeader{{Key: "Idempotency-Key", Value: []byte("k")}}}
	}
	p.forward(context.Background(), c, s, rec(time.Now()))
	p.forward(context.Background(), c, s, rec(time.Now().Add(time.Hour)))
	if len(got) != 2 || got[0].Topic != "g.push.repartition" || got[1].Topic != "dedup.audit" {
		t.Fatalf("produced %v", got)
	}
	h := map[string]string{}
	for _, x := range got[1].Headers {
		h[x.Key] = string(x.Value)
	}
	if h["dedup.reason"] != "refused" || h["dedup.refused_by"] != "g.push.repartition" || h["dedup.refused_error"] != "INVALID_TIMESTAMP" || h["dedup.source"] != "push-events/1/5" {
		t.Fatalf("audit headers %v", h)
	}
}

// recordingClient completes every produce at once and keeps the records.
type recordingClient struct {
	lateClient
	got *[]*kgo.Record
}

func (c *recordingClient) Produce(_ context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	*c.got = append(*c.got, r)
	promise(r, nil)
}
