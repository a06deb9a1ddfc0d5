package embedded

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

const topic = "kdedup.changelog"

// committedValues reads topic from its start under read_committed, as a
// restore does, up to a sentinel record it writes first, and returns the
// last value of each key.
func committedValues(ctx context.Context, t *testing.T, addrs []string) map[string]string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic), kgo.DisableFetchSessions(), kgo.DefaultProduceTopic(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sentinel := &kgo.Record{Key: []byte("sentinel")}
	if err := cl.ProduceSync(ctx, sentinel).FirstErr(); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: %v", topic, ctx.Err())
		}
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset == sentinel.Offset {
				done = true
				return
			}
			got[string(r.Key)] = string(r.Value)
		})
		if done {
			return got
		}
	}
}

// openTransaction commits key=v1 and other=x, then opens a transaction
// that writes key=v2 and leaves it open, then writes one more record
// outside it. It returns the client holding the open transaction.
func openTransaction(ctx context.Context, t *testing.T, addrs []string) *kgo.Client {
	t.Helper()
	adm, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	resp, err := kadm.NewClient(adm).CreateTopic(ctx, 1, 1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatal(err)
	}
	txn, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.TransactionalID("kdedup-i"), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(txn.Close)
	for _, r := range []*kgo.Record{{Key: []byte("key"), Value: []byte("v1")}, {Key: []byte("other"), Value: []byte("x")}} {
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := txn.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
	}
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := txn.ProduceSync(ctx, &kgo.Record{Key: []byte("key"), Value: []byte("v2")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// Another writer's record after it (a restore's sentinel): the open
	// transaction's batch is no longer the last, which compaction keeps.
	plain, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if err := plain.ProduceSync(ctx, &kgo.Record{Key: []byte("sentinel-0")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return txn
}

// TestNoCompactionPastOpenTransactions: the embedded broker must not lose
// a changelog record to compaction past an open transaction
// (TestUnguardedCompactionLosesCommitted shows kfake's compaction does).
// Its compaction timer is off, and nothing else compacts: a transaction
// is opened over a committed record of the same key, the broker is
// restarted on its data (as kdedup's restart restarts it), the
// transaction ends aborted, and the topic read from scratch, as a restore
// reads it, still holds the committed value.
func TestNoCompactionPastOpenTransactions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	b, err := Start(dir, 0, 1, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	rcs, err := kadm.NewClient(cl).DescribeBrokerConfigs(ctx)
	cl.Close()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, rc := range rcs {
		for _, c := range rc.Configs {
			if c.Key == "log.cleaner.backoff.ms" {
				found = true
				if c.MaybeValue() != neverMs {
					t.Fatalf("log.cleaner.backoff.ms = %q, want %s: the compaction timer is on", c.MaybeValue(), neverMs)
				}
			}
		}
	}
	if !found {
		t.Fatal("log.cleaner.backoff.ms not described")
	}

	txn := openTransaction(ctx, t, b.Addrs())
	txn.Close() // the transaction stays open in the broker
	b.Close()
	b, err = Start(dir, 0, 1, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// Reloaded, kfake treats the open transaction as aborted;
	// EndCrashedTransactions writes its abort markers, as kdedup does at
	// start.
	if err := EndCrashedTransactions(ctx, b.Addrs(), "kdedup-i", map[string]int32{topic: 1}); err != nil {
		t.Fatal(err)
	}
	if got := committedValues(ctx, t, b.Addrs()); got["key"] != "v1" || got["other"] != "x" {
		t.Fatalf("after the open transaction ended aborted: %v, want key=v1 other=x", got)
	}
}

// TestUnguardedCompactionLosesCommitted documents why the embedded broker
// never compacts: kfake's compaction, run while a transaction is open,
// keeps that transaction's record of a key and drops the committed one;
// the abort then leaves the key with no value at all. If kfake learns to
// stop at the last stable offset, this test fails, and compaction may be
// reconsidered (it must also become crash-safe: see Start).
func TestUnguardedCompactionLosesCommitted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	txn := openTransaction(ctx, t, c.ListenAddrs())
	c.Compact()
	if err := txn.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	if got := committedValues(ctx, t, c.ListenAddrs()); got["key"] == "v1" {
		t.Fatalf("kfake kept the committed record past an open transaction (%v): the guard in Compact may no longer be needed", got)
	}
}
