package consumer

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kdedup/kdedup/dedup"
	"github.com/kdedup/kdedup/producer"
)

// produceKey writes a push event with idempotency key key and value to
// partition, and returns its offset.
func (rc *runCluster) produceKey(ctx context.Context, t *testing.T, partition int32, key, value string) int64 {
	t.Helper()
	r := &kgo.Record{Partition: partition, Value: []byte(value), Headers: []kgo.RecordHeader{{Key: "Idempotency-Key", Value: []byte(key)}}}
	if err := rc.prod.ProduceSync(ctx, r).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return r.Offset
}

// waitLive looks key up until its entry is the one first seen at offset
// first of partition 0, and returns its state.
func waitLive(ctx context.Context, t *testing.T, p *Processor, key string, first int64) KeyState {
	t.Helper()
	for {
		ks, err := p.LookupKey(ctx, KeyQuery{Stream: "push", Key: key})
		if err == nil && ks.Entries[0].Offset == first {
			return ks
		}
		if err != nil && !errors.Is(err, ErrNotLive) {
			t.Fatalf("looking %s up: %v", key, err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("key %s never live with first offset %d (last: %+v, %v)", key, first, ks, err)
		case <-time.After(20 * time.Millisecond): // polling the committed state: no event to wait on
		}
	}
}

// readAll reads topic under read_committed from the start until it holds
// n records, or fails at ctx's end.
func (rc *runCluster) readAll(ctx context.Context, t *testing.T, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(rc.c.ListenAddrs()...), kgo.ConsumeTopics(topic), kgo.DisableFetchSessions(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for len(recs) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%s: %d records, want %d: %v", topic, len(recs), n, ctx.Err())
		}
		recs = append(recs, fs.Records()...)
	}
	return recs
}

func header(r *kgo.Record, name string) string {
	for i := len(r.Headers) - 1; i >= 0; i-- {
		if r.Headers[i].Key == name {
			return string(r.Headers[i].Value)
		}
	}
	return ""
}

// TestKeyAdmin drives LookupKey and ForgetKey against a running
// processor on three brokers: a lookup of a live key, of one not live,
// of an unknown stream; a forget with a stale ETag (refused), with the
// current one (the key passes again as first-seen, once, and leaves a
// forgotten audit record), and a handover to an instance with no local
// state, which must restore the forget from the changelog.
func TestKeyAdmin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rc := newRunCluster(t, 3, 2)
	p, stop := rc.startProc(t, t.TempDir(), "a", nil)

	first := rc.produceKey(ctx, t, 0, "order-1", `{"n":1}`)
	ks := waitLive(ctx, t, p, "order-1", first)
	if len(ks.Entries) != 1 || ks.Entries[0].Topic != hoInput || ks.Entries[0].Partition != 0 || ks.ETag == "" {
		t.Fatalf("live key: %+v", ks)
	}
	if want := []string{hoInput + "/0", hoInput + "/1"}; !slices.Equal(ks.Owned, want) {
		t.Errorf("owned %v, want %v", ks.Owned, want)
	}

	t.Run("lookups", func(t *testing.T) {
		if ks, err := p.LookupKey(ctx, KeyQuery{Stream: "push", Key: "never-sent"}); !errors.Is(err, ErrNotLive) || len(ks.Owned) != 2 {
			t.Errorf("key never sent: %+v, %v; want ErrNotLive with the two partitions owned", ks, err)
		}
		if _, err := p.LookupKey(ctx, KeyQuery{Stream: "no-such", Key: "order-1"}); !errors.Is(err, ErrUnknownStream) {
			t.Errorf("unknown stream: %v", err)
		}
		if _, err := p.LookupKey(ctx, KeyQuery{Stream: "push", Key: "order-1", Scope: []string{"extra"}}); !errors.Is(err, dedup.ErrScope) {
			t.Errorf("a scope value for a stream without scope: %v", err)
		}
	})

	t.Run("stale etag", func(t *testing.T) {
		got, err := p.ForgetKey(ctx, KeyQuery{Stream: "push", Key: "order-1"}, Match{ETags: []string{`"stale"`}})
		if !errors.Is(err, ErrPrecondition) || got.ETag != ks.ETag {
			t.Errorf("forget with a stale ETag: %+v, %v; want ErrPrecondition with %s", got, err, ks.ETag)
		}
		if _, err := p.LookupKey(ctx, KeyQuery{Stream: "push", Key: "order-1"}); err != nil {
			t.Errorf("refused forget removed the key: %v", err)
		}
	})

	if _, err := p.ForgetKey(ctx, KeyQuery{Stream: "push", Key: "order-1"}, Match{ETags: []string{`"x"`, ks.ETag}}); err != nil {
		t.Fatalf("forget with the current ETag: %v", err)
	}
	if _, err := p.LookupKey(ctx, KeyQuery{Stream: "push", Key: "order-1"}); !errors.Is(err, ErrNotLive) {
		t.Fatalf("forgotten key still live: %v", err)
	}
	if _, err := p.ForgetKey(ctx, KeyQuery{Stream: "push", Key: "order-1"}, Match{Any: true}); !errors.Is(err, ErrNotLive) {
		t.Errorf("forgetting a forgotten key: %v, want ErrNotLive", err)
	}
	audits := rc.readAll(ctx, t, "dedup.audit", 1)
	if r := audits[0]; header(r, producer.HeaderReason) != producer.ReasonForgotten || header(r, producer.HeaderKey) != "order-1" ||
		header(r, producer.HeaderStream) != "push" || header(r, producer.HeaderFirst) != hoInput+"/0/0" || len(r.Value) != 0 {
		t.Errorf("audit record of the forget: %+v", r)
	}

	// The key passes again, once: its next copy is first-seen, the one
	// after a duplicate.
	again := rc.produceKey(ctx, t, 0, "order-1", `{"n":1}`)
	ks2 := waitLive(ctx, t, p, "order-1", again)
	if ks2.ETag == ks.ETag {
		t.Errorf("the new first-seen entry kept the forgotten one's ETag %s", ks.ETag)
	}
	rc.produceKey(ctx, t, 0, "order-1", `{"n":1}`)
	outs := rc.readAll(ctx, t, hoInput+".deduped", 2)
	audits = rc.readAll(ctx, t, "dedup.audit", 2)
	if len(outs) != 2 || outs[1].Offset <= outs[0].Offset {
		t.Fatalf("outputs: %d", len(outs))
	}
	if r := audits[1]; header(r, producer.HeaderReason) != "duplicate" || header(r, producer.HeaderFirst) != hoInput+"/0/"+strconv.FormatInt(again, 10) {
		t.Errorf("third copy: reason %s first %s, want a duplicate of offset %d", header(r, producer.HeaderReason), header(r, producer.HeaderFirst), again)
	}
	stop()

	// A new instance without local state restores the partition from the
	// changelog: the forgotten entry must stay gone, the new one live.
	p2, _ := rc.startProc(t, t.TempDir(), "a", nil)
	ks3 := waitLive(ctx, t, p2, "order-1", again)
	if ks3.ETag != ks2.ETag {
		t.Errorf("restored entry's ETag %s, want %s (the same entry)", ks3.ETag, ks2.ETag)
	}
	if _, err := p2.ForgetKey(ctx, KeyQuery{Stream: "push", Key: "order-1"}, Match{Any: true}); err != nil {
		t.Fatalf("forget with *: %v", err)
	}
	if _, err := p2.LookupKey(ctx, KeyQuery{Stream: "push", Key: "order-1"}); !errors.Is(err, ErrNotLive) {
		t.Fatalf("forgotten key still live after a forget with *: %v", err)
	}
}

// TestETag checks that the entity tag changes with every field of an
// entry, and is the same for the same entries.
func TestETag(t *testing.T) {
	base := KeyEntry{Topic: "t", Partition: 1, Entry: dedup.Entry{Topic: "t", Partition: 1, Offset: 7, FirstSeen: 100, Expiry: 200, Fingerprint: dedup.Fingerprint{1}}}
	tag := etag([]KeyEntry{base})
	if tag == "" || tag[0] != '"' || tag[len(tag)-1] != '"' {
		t.Fatalf("etag %s: want a quoted strong tag", tag)
	}
	if etag([]KeyEntry{base}) != tag {
		t.Errorf("etag of the same entry changed")
	}
	if etag(nil) != "" {
		t.Errorf("etag of no entries: want empty")
	}
	for name, mod := range map[string]func(*KeyEntry){
		"partition":   func(e *KeyEntry) { e.Partition = 2 },
		"offset":      func(e *KeyEntry) { e.Offset = 8 },
		"first seen":  func(e *KeyEntry) { e.FirstSeen = 101 },
		"refresh":     func(e *KeyEntry) { e.Expiry = 300 },
		"fingerprint": func(e *KeyEntry) { e.Fingerprint[0] = 2 },
		"first topic": func(e *KeyEntry) { e.Entry.Topic = "u" },
	} {
		t.Run(name, func(t *testing.T) {
			e := base
			mod(&e)
			if etag([]KeyEntry{e}) == tag {
				t.Errorf("changing the %s kept the ETag", name)
			}
		})
	}
}

// TestReadyNeedsTheGroup: an instance whose group join never completes is
// not ready, however many empty polls it makes; it becomes ready once the
// group assigns (even nothing new).
func TestReadyNeedsTheGroup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rc := newRunCluster(t, 1, 2)
	var refuse atomic.Bool
	refuse.Store(true)
	refused := make(chan struct{}, 1)
	rc.c.ControlKey(int16(kmsg.JoinGroup), func(req kmsg.Request) (kmsg.Response, error, bool) {
		rc.c.KeepControl()
		if !refuse.Load() {
			return nil, nil, false
		}
		resp := req.(*kmsg.JoinGroupRequest).ResponseKind().(*kmsg.JoinGroupResponse)
		resp.ErrorCode = kerr.CoordinatorLoadInProgress.Code
		select {
		case refused <- struct{}{}:
		default:
		}
		return resp, nil, true
	})
	p, _ := rc.startProc(t, t.TempDir(), "a", nil)
	// Joins refused for 2.5 idle ticks: the loop's polls return empty
	// twice at least meanwhile, which is what used to make it ready.
	for until := time.Now().Add(5 * idleTick / 2); time.Now().Before(until); {
		select {
		case <-refused:
		case <-ctx.Done():
			t.Fatal("no join refused")
		}
		if p.Ready() {
			t.Fatal("ready while the group has not assigned anything")
		}
	}
	refuse.Store(false)
	for !p.Ready() {
		select {
		case <-ctx.Done():
			t.Fatal("never ready once the group answered")
		case <-time.After(20 * time.Millisecond): // Ready is polled: no event to wait on
		}
	}
}
