package consumer

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kdedup/kdedup/config"
)

// countingObserver counts committed transactions and session rebuilds.
type countingObserver struct {
	nopObserver
	committed atomic.Int64
	first     chan struct{} // closed at the first commit
	rebuiltC  chan string   // each rebuild's reason, while there is room
	mu        sync.Mutex
	rebuilt   map[string]int
}

func newCountingObserver() *countingObserver {
	return &countingObserver{first: make(chan struct{}), rebuiltC: make(chan string, 64)}
}

func (o *countingObserver) Transaction(committed bool, _ time.Duration, _ int) {
	if committed && o.committed.Add(1) == 1 {
		close(o.first)
	}
}

func (o *countingObserver) Rebuilt(reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.rebuilt == nil {
		o.rebuilt = map[string]int{}
	}
	o.rebuilt[reason]++
	select {
	case o.rebuiltC <- reason:
	default:
	}
}

func (o *countingObserver) rebuilds(reason string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.rebuilt[reason]
}

// waitRebuilt waits for a session rebuild for reason.
func (o *countingObserver) waitRebuilt(ctx context.Context, t *testing.T, reason string) {
	t.Helper()
	for {
		select {
		case r := <-o.rebuiltC:
			if r == reason {
				return
			}
		case <-ctx.Done():
			t.Fatalf("no session rebuilt for %s: %v", reason, ctx.Err())
		}
	}
}

// runCluster is a kfake cluster with push-events, its output, the audit
// and the changelog topics, parts partitions each.
type runCluster struct {
	c     *kfake.Cluster
	parts int32
	prod  *kgo.Client
	seq   atomic.Int64 // idempotency keys handed out
}

func newRunCluster(t *testing.T, brokers int, parts int32) *runCluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(brokers), kfake.SeedTopics(parts, hoInput, hoInput+".deduped", "dedup.audit", hoChangelog))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	prod, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DefaultProduceTopic(hoInput))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	return &runCluster{c: c, parts: parts, prod: prod}
}

// produce writes n first-seen push events to partition.
func (rc *runCluster) produce(ctx context.Context, partition int32, n int) error {
	rs := make([]*kgo.Record, n)
	for i := range rs {
		k := fmt.Sprintf("k-%d", rc.seq.Add(1))
		rs[i] = &kgo.Record{Partition: partition, Value: []byte(`{}`), Headers: []kgo.RecordHeader{{Key: "Idempotency-Key", Value: []byte(k)}}}
	}
	return rc.prod.ProduceSync(ctx, rs...).FirstErr()
}

// interval sets the commit interval.
func interval(d time.Duration) func(*Options) { return func(o *Options) { o.CommitInterval = d } }

// start runs a processor of group "g" as instance id over a store in dir,
// with a commit interval of 100 ms, a session timeout of 10 s and a
// transaction timeout of 5 s unless opts change them, until the returned
// stop is called.
func (rc *runCluster) start(t *testing.T, dir, id string, obs Observer, opts ...func(*Options)) (stop func()) {
	t.Helper()
	_, stop = rc.startProc(t, dir, id, obs, opts...)
	return stop
}

// startProc is start that also returns the processor.
func (rc *runCluster) startProc(t *testing.T, dir, id string, obs Observer, opts ...func(*Options)) (proc *Processor, stop func()) {
	t.Helper()
	rules, store := pushStore(t, dir)
	n := rc.parts
	o := Options{
		Brokers: rc.c.ListenAddrs(), Group: "g", InstanceID: id, Guarantee: config.ExactlyOnce,
		CommitInterval: 100 * time.Millisecond, AuditTopic: "dedup.audit", ChangelogTopic: hoChangelog,
		Streams:    []Stream{{Rules: rules, Input: hoInput, Output: hoInput + ".deduped"}},
		Partitions: map[string]int32{hoInput: n, hoInput + ".deduped": n, "dedup.audit": n, hoChangelog: n},
		Store:      store, Log: testLog(), Observer: obs,
		SessionTimeout: 10 * time.Second, TransactionTimeout: 5 * time.Second,
		// franz-go's Close races a fetch in flight on the fetch session's
		// fields; the race detector would fail the test on it.
		ClientOpts: []kgo.Opt{kgo.DisableFetchSessions()},
	}
	for _, fn := range opts {
		fn(&o)
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
			store.Close()
		})
	}
	t.Cleanup(stop)
	return p, stop
}

// waitOutputs reads the output topic under read_committed until it holds
// want records, then for quiet more, and fails on a key output twice, on
// more than want records, or on ctx's end first.
func (rc *runCluster) waitOutputs(ctx context.Context, t *testing.T, want int, quiet time.Duration) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(rc.c.ListenAddrs()...), kgo.ConsumeTopics(hoInput+".deduped"), kgo.DisableFetchSessions(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	seen := map[string]bool{}
	read := func(ctx context.Context) {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			k := string(r.Headers[0].Value)
			if seen[k] {
				t.Errorf("key %s output twice", k)
			}
			seen[k] = true
		})
	}
	for len(seen) < want {
		read(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%d of %d records output: %v", len(seen), want, ctx.Err())
		}
	}
	// That nothing more comes cannot be waited on: read for a while.
	qctx, cancel := context.WithTimeout(ctx, quiet)
	defer cancel()
	for qctx.Err() == nil {
		read(qctx)
	}
	if len(seen) != want {
		t.Fatalf("%d records output, want %d", len(seen), want)
	}
}

// decideThenLeave runs instance a until the output holds want records,
// then stops it: the group's offsets and the changelog are another
// instance's when the next one starts.
func (rc *runCluster) decideThenLeave(ctx context.Context, t *testing.T, want int) {
	t.Helper()
	stop := rc.start(t, t.TempDir(), "a", nil)
	rc.waitOutputs(ctx, t, want, 0)
	stop()
}

// slowFetches delays every fetch that node answers by d: a leader in
// another zone, or a busier broker.
func slowFetches(c *kfake.Cluster, node int32, d time.Duration) {
	c.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if c.CurrentNode() == node {
			c.SleepControl(func() { time.Sleep(d) })
		}
		return nil, nil, false
	})
}

// TestRestoreAfterRewindOnSlowLeader: on three brokers, with the leader of
// partition 0 answering fetches 60 ms after the others, and partition 0's
// state behind the committed offset (another instance processed it, then
// left), transactions must go on committing. Before the fix, partition 0's
// records always arrived second, inside the transaction the faster
// partitions began, and aborted it (to restore first) again and again:
// no transaction committed, and /readyz said ready.
func TestRestoreAfterRewindOnSlowLeader(t *testing.T) {
	rc := newRunCluster(t, 3, 3)
	for p := int32(0); p < 3; p++ {
		if err := rc.c.MoveTopicPartition(hoInput, p, p); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for p := int32(0); p < 3; p++ {
		if err := rc.produce(ctx, p, 200); err != nil {
			t.Fatal(err)
		}
	}
	rc.decideThenLeave(ctx, t, 600)

	if err := rc.produce(ctx, 0, 200); err != nil {
		t.Fatal(err)
	}
	slowFetches(rc.c, rc.c.LeaderFor(hoInput, 0), 60*time.Millisecond)
	// Every partition is fed continuously, so that no fetch waits long
	// for data: partition 0's records arrive 60 ms after the others', as
	// its leader is that much slower.
	stopFeed := make(chan struct{})
	var fed sync.WaitGroup
	fed.Add(1)
	fedN := 0
	go func() {
		defer fed.Done()
		// A steady trickle, not a flood: a poll's records are decided
		// well within the commit interval, so the transaction is still
		// open when the slower leader's records arrive. Stopped between
		// batches, so that every batch is produced whole.
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopFeed:
				return
			case <-tick.C:
			}
			for p := int32(0); p < 3; p++ {
				if err := rc.produce(ctx, p, 5); err != nil {
					t.Errorf("feeding partition %d: %v", p, err)
					return
				}
				fedN += 5
			}
		}
	}()
	// Instance b has no state: every partition is behind. A commit
	// interval well above the leader's lag: the slower records always
	// arrive while the transaction is open.
	obs := newCountingObserver()
	rc.start(t, t.TempDir(), "b", obs, interval(500*time.Millisecond))
	select {
	case <-obs.first:
	case <-time.After(10 * time.Second):
		t.Fatal("no transaction committed within 10s: a partition behind on a slower leader stalls every commit")
	}
	close(stopFeed)
	fed.Wait()
	rc.waitOutputs(ctx, t, 800+fedN, time.Second)
}

// TestOffsetFetchErrorRejoins: franz-go drops a partition whose committed
// offset cannot be fetched (a non-retryable OffsetFetch error) from the
// assignment and reports it once as a fetch error. kdedup must not go on
// without it until the next rebalance: it rejoins, and every record of
// the partition is decided.
func TestOffsetFetchErrorRejoins(t *testing.T) {
	rc := newRunCluster(t, 1, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for p := int32(0); p < 2; p++ {
		if err := rc.produce(ctx, p, 100); err != nil {
			t.Fatal(err)
		}
	}
	h := rc.c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetFetch}, Group: "g", Topic: hoInput, Partitions: []int32{0}, Err: kerr.TopicAuthorizationFailed})
	obs := newCountingObserver()
	rc.start(t, t.TempDir(), "a", obs)
	rc.waitOutputs(ctx, t, 200, 0)
	if h.Hits() == 0 {
		t.Fatal("the OffsetFetch fault never fired")
	}
	if n := obs.rebuilds(RebuildPartitionStalled); n == 0 {
		t.Fatal("no rejoin after the partition stalled")
	}
}

// TestFetchErrorOfConsumedPartitionKeepsSession: a non-retryable error in
// a fetch of a partition being consumed (franz-go keeps such a partition
// and retries) must not rebuild the session: rebuilding on it would abort
// every transaction while the broker keeps failing.
func TestFetchErrorOfConsumedPartitionKeepsSession(t *testing.T) {
	rc := newRunCluster(t, 1, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := rc.produce(ctx, 0, 100); err != nil {
		t.Fatal(err)
	}
	obs := newCountingObserver()
	rc.start(t, t.TempDir(), "a", obs)
	rc.waitOutputs(ctx, t, 100, 0)
	h := rc.c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: hoInput, Partitions: []int32{0}, Err: kerr.UnknownServerError, Count: 3})
	if err := rc.produce(ctx, 0, 100); err != nil {
		t.Fatal(err)
	}
	rc.waitOutputs(ctx, t, 200, 0)
	if h.Hits() == 0 {
		t.Fatal("the Fetch fault never fired")
	}
	if n := obs.rebuilds(RebuildPartitionStalled); n != 0 {
		t.Fatalf("%d rejoins for fetch errors of a partition the client kept", n)
	}
}

// TestRestoreStallLeavesGroup: a restore that cannot read on (a
// transaction left hanging on the changelog stops every read_committed
// reader at it) gives up after RestoreStallTimeout; the session leaves the
// group, so that the partitions can move, and rejoins. Once the
// transaction ends, every record is decided exactly once.
func TestRestoreStallLeavesGroup(t *testing.T) {
	rc := newRunCluster(t, 1, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A transaction left hanging on the changelog before instance a writes
	// its state there.
	hanging := hangTransaction(t, rc.c, &kgo.Record{Topic: hoChangelog, Key: []byte("not kdedup's"), Value: []byte("x")})
	if err := rc.produce(ctx, 0, 100); err != nil {
		t.Fatal(err)
	}
	rc.decideThenLeave(ctx, t, 100)
	if err := rc.produce(ctx, 0, 100); err != nil {
		t.Fatal(err)
	}
	leaves := rc.c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.LeaveGroup}, Observe: true, Count: -1})
	defer leaves.Remove()
	obs := newCountingObserver()
	// Instance b has no state: it restores from the changelog, and stops
	// at the hanging transaction.
	rc.start(t, t.TempDir(), "b", obs, func(o *Options) {
		o.TransactionTimeout, o.RestoreStallTimeout = time.Second, 2*time.Second
	})
	obs.waitRebuilt(ctx, t, RebuildRestoreStalled)
	if leaves.Hits() == 0 {
		t.Fatal("the session rebuilt after a stalled restore without leaving the group")
	}
	if err := hanging.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	rc.waitOutputs(ctx, t, 200, time.Second)
}

// testLog is the processors' log: none, or on stderr with
// KDEDUP_TEST_LOG=1.
func testLog() zerolog.Logger {
	if os.Getenv("KDEDUP_TEST_LOG") == "" {
		return zerolog.Nop()
	}
	return zerolog.New(os.Stderr).Level(zerolog.InfoLevel)
}
