package consumer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/config"
	"github.com/kdedup/kdedup/state"
)

// resend writes again the push events of keys k-from..k-to to partition
// (rc.produce wrote k-i to the partition it was asked for).
func (rc *runCluster) resend(ctx context.Context, partition int32, from, to int) error {
	var rs []*kgo.Record
	for i := from; i <= to; i++ {
		rs = append(rs, &kgo.Record{Partition: partition, Value: []byte(`{}`), Headers: []kgo.RecordHeader{{Key: "Idempotency-Key", Value: []byte(fmt.Sprintf("k-%d", i))}}})
	}
	return rc.prod.ProduceSync(ctx, rs...).FirstErr()
}

// TestRunStopsOnCorruptStore: the state's sstables are damaged under a
// running processor. The lookups of duplicates that read them fail: none
// may be taken for an absent key (a duplicate output), nor panic (Pebble's
// default reaction to corruption), nor leave the processor aborting
// transaction after transaction. Run returns an error wrapping
// state.ErrStoreCorrupt; the store rebuilt (state.Store.Rebuild), a new
// processor restores from the changelog and decides the rest exactly once.
func TestRunStopsOnCorruptStore(t *testing.T) {
	rc := newRunCluster(t, 1, 2)
	dir := filepath.Join(t.TempDir(), "state")
	rules, _ := pushStore(t, t.TempDir())
	store, err := state.Open(dir, state.Options{Logger: testLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	o := Options{
		Brokers: rc.c.ListenAddrs(), Group: "g", InstanceID: "i", Guarantee: config.ExactlyOnce,
		CommitInterval: 100 * time.Millisecond, AuditTopic: "dedup.audit", ChangelogTopic: hoChangelog,
		Streams:    []Stream{{Rules: rules, Input: hoInput, Output: hoInput + ".deduped"}},
		Partitions: map[string]int32{hoInput: 2, hoInput + ".deduped": 2, "dedup.audit": 2, hoChangelog: 2},
		Store:      store, Log: testLog(),
		SessionTimeout: 10 * time.Second, TransactionTimeout: 5 * time.Second,
		ClientOpts: []kgo.Opt{kgo.DisableFetchSessions()},
	}
	run := func(ctx context.Context) <-chan error {
		p, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		return done
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var done <-chan error
	// Run ends before the store closes.
	defer func() {
		cancel()
		if done != nil {
			<-done
		}
	}()

	const per = 3000
	done = run(ctx)
	for part := range int32(2) {
		if err := rc.produce(ctx, part, per); err != nil {
			t.Fatal(err)
		}
	}
	rc.waitOutputs(ctx, t, 2*per, 0)
	// Committed changes reach Pebble at the partitions' next checkpoint
	// (within 10 s).
	for {
		kss, err := store.Keyspaces()
		if err != nil {
			t.Fatal(err)
		}
		if len(kss) == 2 && kss[state.TopicPartition{Topic: hoInput, Partition: 0}].Keys == per && kss[state.TopicPartition{Topic: hoInput, Partition: 1}].Keys == per {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("state not written to Pebble: %v", kss)
		case <-time.After(100 * time.Millisecond): // polling: no event for a checkpoint
		}
	}
	// Every key into new sstables, none of whose blocks is cached, then
	// every sstable damaged.
	if err := store.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(tables) == 0 {
		t.Fatal("no sstable")
	}
	for _, path := range tables {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		for at := int64(0); at < st.Size()*9/10; at += 2048 {
			f.WriteAt([]byte("damaged!"), at)
		}
		f.Close()
	}
	// Duplicates of every key: their lookups read the damaged blocks.
	if err := rc.resend(ctx, 0, 1, per); err != nil {
		t.Fatal(err)
	}
	if err := rc.resend(ctx, 1, per+1, 2*per); err != nil {
		t.Fatal(err)
	}
	select {
	case err = <-done:
		done = nil
	case <-ctx.Done():
		t.Fatal("Run did not stop on the corrupt store")
	}
	if !errors.Is(err, state.ErrStoreCorrupt) {
		t.Fatalf("Run returned %v, want state.ErrStoreCorrupt", err)
	}
	t.Logf("Run: %v", err)

	quarantined, err := store.Rebuild(err)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(quarantined, filepath.Base(tables[0]))); err != nil {
		t.Fatalf("quarantine lacks the damaged sstable: %v", err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	done = run(rctx)
	for part := range int32(2) {
		if err := rc.produce(ctx, part, 500); err != nil {
			t.Fatal(err)
		}
	}
	// The duplicates are audited, the new keys output: each key once.
	rc.waitOutputs(ctx, t, 2*per+1000, 2*time.Second)
	rcancel()
	err = <-done
	done = nil
	if err != nil {
		t.Fatalf("Run after the rebuild: %v", err)
	}
	kss, err := store.Keyspaces()
	if err != nil {
		t.Fatal(err)
	}
	for tp, st := range kss {
		if st.Keys != per+500 {
			t.Errorf("%v: %d keys after the restore, want %d", tp, st.Keys, per+500)
		}
	}
}
