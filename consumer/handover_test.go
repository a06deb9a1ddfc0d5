package consumer

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/config"
	"github.com/kdedup/kdedup/dedup"
	"github.com/kdedup/kdedup/state"
)

// handoverFixture is a cluster whose changelog holds the state of
// push-events/0: keys entries, then a marker at input offset to. The
// cluster is kfake, or, for the benchmarks, the brokers of
// KDEDUP_BENCH_BROKERS (host:port,...), where the fixture's changelog is
// a topic of its own, deleted by close.
type handoverFixture struct {
	brokers   []string
	changelog string
	close     func()
	to        int64
}

const (
	hoInput     = "push-events"
	hoChangelog = "kdedup.changelog"
)

func newHandoverFixture(tb testing.TB, keys int) *handoverFixture {
	tb.Helper()
	return newHistoryFixture(tb, keys, 0, false)
}

// newHistoryFixture is newHandoverFixture whose changelog first holds the
// history of expired keys, as kdedup writes it: their entries and markers
// stamped two hours ago, then their tombstones an hour ago; the live keys'
// entries follow, a day of event time later, and their marker carries a
// seek past the history if seek is set.
func newHistoryFixture(tb testing.TB, keys, expired int, seek bool) *handoverFixture {
	tb.Helper()
	f := &handoverFixture{changelog: hoChangelog}
	if env := os.Getenv("KDEDUP_BENCH_BROKERS"); env != "" {
		f.brokers, f.changelog = strings.Split(env, ","), fmt.Sprintf("kdedup-handover-%d.changelog", time.Now().UnixNano())
		adm, err := kgo.NewClient(kgo.SeedBrokers(f.brokers...))
		if err != nil {
			tb.Fatal(err)
		}
		ka := kadm.NewClient(adm)
		if _, err := ka.CreateTopic(context.Background(), 1, -1, nil, f.changelog); err != nil {
			tb.Fatal(err)
		}
		f.close = func() {
			_, _ = ka.DeleteTopics(context.Background(), f.changelog)
			adm.Close()
		}
	} else {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, hoInput, hoInput+".deduped", "dedup.audit", hoChangelog))
		if err != nil {
			tb.Fatal(err)
		}
		f.brokers, f.close = c.ListenAddrs(), c.Close
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.brokers...), kgo.DefaultProduceTopic(f.changelog),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(100_000))
	if err != nil {
		tb.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	produce := func(k, v []byte, ts int64) {
		cl.Produce(ctx, &kgo.Record{Key: k, Value: v, Timestamp: time.UnixMilli(ts)}, func(_ *kgo.Record, err error) {
			if err != nil {
				tb.Error(err)
			}
		})
	}
	hashOf := func(i int) dedup.Hash {
		var h dedup.Hash
		binary.BigEndian.PutUint64(h[:], uint64(i)*0x9e3779b97f4a7c15)
		binary.BigEndian.PutUint64(h[8:], uint64(i))
		return h
	}
	now := time.Now().UnixMilli()
	for i := keys; i < keys+expired; i++ {
		e := dedup.Entry{FirstSeen: base, Expiry: base + 3_600_000, Topic: hoInput, Partition: 0, Offset: int64(i)}
		k, v := state.EntryChange(hoInput, 0, hashOf(i), &e)
		produce(k, v, now-7_200_000)
	}
	if expired > 0 {
		k, v := state.MarkerChange(hoInput, 0, int64(expired), base)
		produce(k, v, now-7_200_000)
		for i := keys; i < keys+expired; i++ {
			produce(state.Tombstone(hoInput, 0, hashOf(i)), nil, now-3_600_000)
		}
		k, v = state.MarkerChange(hoInput, 0, int64(expired)+1, base+3*3_600_000)
		produce(k, v, now-3_600_000)
	}
	live := base + 86_400_000
	for i := 0; i < keys; i++ {
		e := dedup.Entry{FirstSeen: live + int64(i), Expiry: live + int64(i) + 3_600_000, Topic: hoInput, Partition: 0, Offset: int64(i)}
		k, v := state.EntryChange(hoInput, 0, hashOf(i), &e)
		produce(k, v, now)
	}
	to := int64(keys + expired + 1)
	k, v := state.MarkerChange(hoInput, 0, to, live+int64(keys))
	marker := &kgo.Record{Key: k, Value: v, Timestamp: time.UnixMilli(now)}
	if seek {
		marker.Headers = seekHeaders(now - 3_600_000 + 1)
	}
	if err := cl.ProduceSync(ctx, marker).FirstErr(); err != nil {
		tb.Fatal(err)
	}
	if err := cl.Flush(ctx); err != nil {
		tb.Fatal(err)
	}
	f.to = to
	return f
}

// readyObserver records Ready as the restore reports to it.
type readyObserver struct {
	nopObserver
	p           *Processor
	readyDuring []bool
}

func (o *readyObserver) Restored(string, int32, int64, int64) {
	o.readyDuring = append(o.readyDuring, o.p.Ready())
}

// pushStore returns the rules of the push stream the consumer tests run
// (an Idempotency-Key header, a one-hour window) and a store in dir.
func pushStore(tb testing.TB, dir string) (*dedup.Rules, *state.Store) {
	tb.Helper()
	rules, err := dedup.Compile(config.Stream{Name: "push", Input: hoInput, Output: hoInput + ".deduped", TTL: config.Duration(time.Hour), Key: []config.KeySource{{Header: "Idempotency-Key"}}})
	if err != nil {
		tb.Fatal(err)
	}
	store, err := state.Open(dir, state.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return rules, store
}

// restoreInto restores push-events/0 from the fixture's changelog into a
// fresh store in dir and returns the keys restored.
func (f *handoverFixture) restoreInto(tb testing.TB, dir string) int64 {
	tb.Helper()
	keys, _ := f.restoreObserved(tb, dir)
	return keys
}

// restoreObserved is restoreInto that also returns what Ready said while
// the restore reported progress, and after it.
func (f *handoverFixture) restoreObserved(tb testing.TB, dir string) (int64, *readyObserver) {
	tb.Helper()
	rules, store := pushStore(tb, dir)
	defer store.Close()
	p, err := New(Options{
		Brokers: f.brokers, Group: "g", InstanceID: "i", Guarantee: config.ExactlyOnce,
		CommitInterval: 100 * time.Millisecond, AuditTopic: "dedup.audit", ChangelogTopic: f.changelog,
		Streams:    []Stream{{Rules: rules, Input: hoInput, Output: hoInput + ".deduped"}},
		Partitions: map[string]int32{hoInput: 1, hoInput + ".deduped": 1, "dedup.audit": 1, f.changelog: 1},
		Store:      store, Log: zerolog.Nop(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	obs := &readyObserver{p: p}
	p.obs = obs
	p.ready.Store(true) // consuming, in the group: only the restore may make it unready
	p.joined.Store(true)
	st, err := p.partition(tp{hoInput, 0})
	if err != nil {
		tb.Fatal(err)
	}
	if err := p.restore(context.Background(), st, f.to); err != nil {
		tb.Fatal(err)
	}
	if got := st.part.Stamp().Input; got != f.to {
		tb.Fatalf("restored to input offset %d, want %d", got, f.to)
	}
	keys := st.part.Stamp().Keys
	st.part.Close()
	obs.readyDuring = append(obs.readyDuring, p.Ready())
	return keys, obs
}

// TestRestoreFromChangelog: a host with no state rebuilds a partition from
// the changelog alone, every key, up to the marker of the committed offset.
func TestRestoreFromChangelog(t *testing.T) {
	f := newHandoverFixture(t, 5_000)
	defer f.close()
	keys, obs := f.restoreObserved(t, t.TempDir())
	if keys != 5_000 {
		t.Fatalf("restored %d keys, want 5000", keys)
	}
	// /readyz: not ready while the restore runs, ready after.
	n := len(obs.readyDuring)
	if n < 2 || obs.readyDuring[n-1] != true {
		t.Fatalf("Ready during and after the restore: %v", obs.readyDuring)
	}
	for _, r := range obs.readyDuring[:n-1] {
		if r {
			t.Fatalf("Ready while restoring: %v", obs.readyDuring)
		}
	}
}

// BenchmarkColdRestoreHistory measures a cold restore of 1M live keys
// from a changelog that first holds 4M keys retired since (entries and
// tombstones: 8M records), with the live marker's seek and without.
//
//	go test ./consumer -run '^$' -bench ColdRestoreHistory -benchtime 1x
func BenchmarkColdRestoreHistory(b *testing.B) {
	const live, expired = 1_000_000, 4_000_000
	for _, seek := range []bool{true, false} {
		b.Run(fmt.Sprintf("seek=%v", seek), func(b *testing.B) {
			benchRestore(b, newHistoryFixture(b, live, expired, seek), live)
		})
	}
}

// BenchmarkHandover measures restoring a partition from the changelog into
// an empty store: what a host that takes over a partition without local
// state pays. The 10M-key case runs with KDEDUP_BENCH_10M=1 (kfake holds
// the whole changelog in memory: several GB).
//
//	go test ./consumer -run '^$' -bench Handover -benchtime 1x
//
// With KDEDUP_BENCH_BROKERS=host:port,... it runs on those brokers (a
// changelog topic of its own, deleted after), e.g. Apache Kafka from
// make kafka-up: KDEDUP_BENCH_BROKERS=127.0.0.1:19092.
func BenchmarkHandover(b *testing.B) {
	sizes := []int{1_000_000}
	if os.Getenv("KDEDUP_BENCH_10M") != "" {
		sizes = append(sizes, 10_000_000)
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			benchRestore(b, newHandoverFixture(b, n), n)
		})
	}
}

// benchRestore times restores of f's partition into empty stores, which
// must hold want keys, and closes f.
func benchRestore(b *testing.B, f *handoverFixture, want int) {
	defer f.close()
	b.ReportAllocs()
	b.ResetTimer()
	var keys int64
	for i := 0; i < b.N; i++ {
		keys = f.restoreInto(b, b.TempDir())
	}
	b.StopTimer()
	if keys != int64(want) {
		b.Fatalf("restored %d keys, want %d", keys, want)
	}
	b.ReportMetric(float64(want)*float64(b.N)/b.Elapsed().Seconds(), "keys/s")
}
