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

// TestEndWaitsForOutcomes: a record that fails only while the transaction
// ends must make it abort (a session's End commits whatever its produces
// did), and the refusal is kept for the retry.
func TestEndWaitsForOutcomes(t *testing.T) {
	p := &Processor{log: zerolog.Nop(), obs: nopObserver{}, parts: map[tp]*partState{}, refusals: map[coord]error{}, fwdNext: map[tp]int64{}, assigned: map[tp]bool{},
		opts: Options{TransactionTimeout: time.Second}}
	c := &lateClient{fail: "push-events.deduped"}
	p.inTxn = true
	at := coord{tp: tp{"push-events", 0}, offset: 7}
	p.produce(context.Background(), c, at, &kgo.Record{Topic: "push-events.deduped", Value: []byte("v")})
	if err := p.end(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if len(c.ended) != 1 || c.ended[0] {
		t.Fatalf("End called with commit=%v: a refused record must abort the transaction", c.ended)
	}
	if p.refused(at) == nil {
		t.Fatal("the refusal was not kept for the retry")
	}
	// Nothing fails the next time: it commits.
	c.fail = ""
	p.inTxn = true
	p.produce(context.Background(), c, at, &kgo.Record{Topic: "dedup.audit"})
	if err := p.end(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if len(c.ended) != 2 || !c.ended[1] {
		t.Fatalf("End called with commit=%v, want a commit", c.ended)
	}
}

// TestForwardRefused: a record its repartition topic would refuse is
// audited as refused by that topic, not forwarded (where it would abort
// every retry).
func TestForwardRefused(t *testing.T) {
	rules, err := dedup.Compile(config.Stream{Name: "push", Input: "push-events", TTL: config.Duration(time.Hour), Key: []config.KeySource{{Header: "Idempotency-Key"}}})
	if err != nil {
		t.Fatal(err)
	}
	p := &Processor{log: zerolog.Nop(), obs: nopObserver{}, parts: map[tp]*partState{}, refusals: map[coord]error{}, fwdNext: map[tp]int64{}, assigned: map[tp]bool{},
		opts: Options{AuditTopic: "dedup.audit", Limits: map[string]producer.Limits{"g.push.repartition": {TimestampAfter: time.Minute}}}}
	s := &streamRun{Stream: Stream{Rules: rules, Input: "push-events", Repartition: "g.push.repartition"}, eng: dedup.NewEngine(rules), repParts: 3, auditParts: 3}
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
