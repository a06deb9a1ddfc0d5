package e2e_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kdedup/kdedup/internal/e2e"
)

// futureLimit is the message.timestamp.after.max.ms of the output and
// audit topics in TestRefusedTimestamp.
const futureLimit = time.Minute

// refuseFuture makes kfake answer INVALID_TIMESTAMP to produce requests
// with a record of topic more than futureLimit ahead of the broker's clock,
// as Apache Kafka does under message.timestamp.after.max.ms (kfake checks
// no timestamps).
func refuseFuture(c *kfake.Cluster, topic string, id [16]byte) {
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.InvalidTimestamp, Count: -1,
		When: func(req kmsg.Request) bool {
			limit := time.Now().Add(futureLimit).UnixMilli()
			for _, t := range req.(*kmsg.ProduceRequest).Topics {
				if t.Topic != topic && t.TopicID != id { // produce v13+ names topics by ID
					continue
				}
				for _, p := range t.Partitions {
					var b kmsg.RecordBatch
					if b.ReadFrom(p.Records) == nil && b.MaxTimestamp > limit {
						return true
					}
				}
			}
			return false
		}})
}

// TestRefusedTimestamp: a first-seen record whose timestamp its output
// topic refuses (INVALID_TIMESTAMP under message.timestamp.after.max.ms)
// is audited as refused instead of aborting forever; when the audit topic
// refuses the timestamp too, the audit record is stamped with the time of
// auditing and keeps the original in dedup.original_ts. Apache Kafka
// validates timestamps; on kfake the same refusal is injected.
func TestRefusedTimestamp(t *testing.T) {
	e := setup(t)
	limit := "60000"
	cl, err := kgo.NewClient(e.conn()...)
	if err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopics(context.Background(), e2e.Partitions, -1,
		map[string]*string{"message.timestamp.after.max.ms": &limit}, e.tp.PushOutput, e.tp.Audit)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	if e.fake != nil {
		for _, topic := range []string{e.tp.PushOutput, e.tp.Audit} {
			refuseFuture(e.fake, topic, resp[topic].ID)
		}
	}
	cl.Close()
	in := start(t, e.config(t, "future", ""))
	defer in.stop(t)

	future := time.Now().Add(30 * time.Minute).Truncate(time.Millisecond)
	ev := func(key string, ts time.Time) *kgo.Record {
		return &kgo.Record{Topic: e.tp.PushInput, Key: []byte("same-partition"), Value: []byte(`{"body":"b"}`), Timestamp: ts,
			Headers: []kgo.RecordHeader{{Key: "Idempotency-Key", Value: []byte(key)}, {Key: "tenant-id", Value: []byte("t")}}}
	}
	now := time.Now()
	recs := []*kgo.Record{ev("now", now), ev("future", future), ev("future", future.Add(time.Millisecond))}
	pcl := producerClient(t, e)
	if err := pcl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := e2e.ReadAll(ctx, e.conn(), len(recs), time.Second, e.tp.PushOutput, e.tp.Audit)
	if err != nil {
		t.Fatalf("%v\n%s", err, in.logs)
	}
	var outs []*kgo.Record
	audit := map[string]map[string]string{}
	stamps := map[string]time.Time{}
	for _, r := range got {
		if r.Topic == e.tp.PushOutput {
			outs = append(outs, r)
			continue
		}
		h := map[string]string{}
		for _, x := range r.Headers {
			h[x.Key] = string(x.Value)
		}
		audit[h["dedup.reason"]] = h
		stamps[h["dedup.reason"]] = r.Timestamp
	}
	if len(outs) != 1 || !outs[0].Timestamp.Equal(now.Truncate(time.Millisecond)) {
		t.Errorf("outputs %v: want the one record of now", outs)
	}
	ref, dup := audit["refused"], audit["duplicate"]
	if ref == nil || ref["dedup.refused_by"] != e.tp.PushOutput || ref["dedup.refused_error"] != "INVALID_TIMESTAMP" || ref["dedup.key"] != "future" {
		t.Fatalf("refused audit record %v (all: %v)\n%s", ref, audit, in.logs)
	}
	if ref["dedup.original_ts"] != strconv.FormatInt(future.UnixMilli(), 10) {
		t.Errorf("dedup.original_ts %q, want %d", ref["dedup.original_ts"], future.UnixMilli())
	}
	if !stamps["refused"].Before(future.Add(-futureLimit)) {
		t.Errorf("refused audit record stamped %v: not restamped", stamps["refused"])
	}
	if dup == nil || dup["dedup.first"] != ref["dedup.source"] || dup["dedup.original_ts"] == "" {
		t.Fatalf("the copy's audit record %v: want a restamped duplicate of %s", dup, ref["dedup.source"])
	}
	if len(got) != len(recs) {
		t.Fatalf("%d records, want %d", len(got), len(recs))
	}
}
