package e2e_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/internal/e2e"
)

// TestTooLarge: a first-seen record its output topic refuses as too large
// is audited (dedup.reason too_large, dedup.refused_by) instead of looping
// on aborts; a copy of it is a duplicate pointing at it; small records
// around it flow as usual.
func TestTooLarge(t *testing.T) {
	e := setup(t)
	cl, err := kgo.NewClient(e.conn()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	limit := "2048"
	if _, err := kadm.NewClient(cl).CreateTopics(context.Background(), e2e.Partitions, -1, map[string]*string{"max.message.bytes": &limit}, e.tp.PushOutput); err != nil {
		t.Fatal(err)
	}
	in := start(t, e.config(t, "big", ""))
	defer in.stop(t)

	now := time.Now()
	ev := func(key, body string, dt time.Duration) *kgo.Record {
		return &kgo.Record{Topic: e.tp.PushInput, Key: []byte("same-partition"), Value: []byte(`{"body":"` + body + `"}`), Timestamp: now.Add(dt),
			Headers: []kgo.RecordHeader{{Key: "Idempotency-Key", Value: []byte(key)}, {Key: "tenant-id", Value: []byte("t")}}}
	}
	big := strings.Repeat("x", 5000)
	recs := []*kgo.Record{ev("a", "small a", 0), ev("big", big, time.Millisecond), ev("big", big, 2*time.Millisecond), ev("b", "small b", 3*time.Millisecond)}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := e2e.ReadAll(ctx, e.conn(), 4, time.Second, e.tp.PushOutput, e.tp.Audit)
	if err != nil {
		t.Fatalf("%v\n%s", err, in.logs)
	}
	var outs []string
	audit := map[string]map[string]string{}
	for _, r := range got {
		if r.Topic == e.tp.PushOutput {
			outs = append(outs, string(r.Value))
			continue
		}
		h := map[string]string{}
		for _, x := range r.Headers {
			h[x.Key] = string(x.Value)
		}
		audit[h["dedup.reason"]] = h
		if len(r.Value) != len(recs[1].Value) {
			t.Errorf("audited record lost its value: %d bytes", len(r.Value))
		}
	}
	if strings.Join(outs, ",") != `{"body":"small a"},{"body":"small b"}` {
		t.Errorf("outputs %q", outs)
	}
	tl, dup := audit["too_large"], audit["duplicate"]
	if tl == nil || tl["dedup.refused_by"] != e.tp.PushOutput || tl["dedup.key"] != "big" {
		t.Fatalf("too_large audit record %v (all: %v)", tl, audit)
	}
	if dup == nil || dup["dedup.first"] != tl["dedup.source"] {
		t.Fatalf("the copy's audit record %v does not point at the refused first-seen %s", dup, tl["dedup.source"])
	}
	if len(got) != 4 {
		t.Fatalf("%d records, want 4", len(got))
	}
}
