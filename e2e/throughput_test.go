package e2e_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/internal/e2e"
)

// rawPipe is the baseline: a transactional consume → produce loop with
// kdedup's client settings and commit interval, copying each input record
// to out (same partition) and deciding nothing.
func rawPipe(ctx context.Context, e *env, out string, interval time.Duration) error {
	sess, err := kgo.NewGroupTransactSession(
		kgo.SeedBrokers(e.bs...),
		kgo.MetadataMinAge(250*time.Millisecond),
		kgo.ConsumerGroup(e.tp.Prefix+"raw-pipe"),
		kgo.ConsumeTopics(e.tp.Inputs()...),
		kgo.InstanceID("raw"),
		kgo.SessionTimeout(45*time.Second),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.TransactionalID(e.tp.Prefix+"raw-pipe-raw"),
		kgo.TransactionTimeout(30*time.Second),
	)
	if err != nil {
		return err
	}
	defer sess.Close()
	inTxn := false
	var started time.Time
	for ctx.Err() == nil {
		pctx, cancel := ctx, context.CancelFunc(func() {})
		if inTxn {
			pctx, cancel = context.WithDeadline(ctx, started.Add(interval))
		}
		fs := sess.PollRecords(pctx, 10_000)
		cancel()
		if recs := fs.Records(); len(recs) > 0 {
			if !inTxn {
				if err := sess.Begin(); err != nil {
					return err
				}
				inTxn, started = true, time.Now()
			}
			for _, r := range recs {
				sess.Produce(ctx, &kgo.Record{Topic: out, Partition: r.Partition, Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp}, nil)
			}
		}
		if inTxn && time.Since(started) >= interval {
			if _, err := sess.End(ctx, kgo.TryCommit); err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			inTxn = false
		}
	}
	return nil
}

// timeToVisible returns how long until n records of topics are visible
// under read_committed, measured from start.
func timeToVisible(t *testing.T, brokers []string, n int, start time.Time, topics ...string) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	seen := 0
	for seen < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("only %d of %d records visible in %v", seen, n, topics)
		}
		seen += len(fs.Records())
	}
	return time.Since(start)
}

// TestThroughput measures kdedup against the raw transactional pipe on the
// same broker and input, with the same commit interval, and reports the
// ratio. Both are timed from start until every input's result is visible
// under read_committed. KDEDUP_THROUGHPUT_EVENTS sets the input size.
func TestThroughput(t *testing.T) {
	n := 100_000
	if s := os.Getenv("KDEDUP_THROUGHPUT_EVENTS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	e := setup(t)
	bs := e.bs
	rawOut := e.tp.Prefix + "raw.out"
	produce(context.Background(), t, producerClient(t, e), e.tp.NewWorkload(7, n), n)
	cl, err := kgo.NewClient(kgo.SeedBrokers(bs...))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kadm.NewClient(cl).CreateTopics(context.Background(), e2e.Partitions, -1, nil, rawOut); err != nil {
		t.Fatal(err)
	}
	cl.Close()

	ctx, cancel := context.WithCancel(context.Background())
	start := time.Now()
	pipeErr := make(chan error, 1)
	go func() { pipeErr <- rawPipe(ctx, e, rawOut, 50*time.Millisecond) }()
	raw := timeToVisible(t, bs, n, start, rawOut)
	cancel()
	if err := <-pipeErr; err != nil {
		t.Fatal(err)
	}

	start = time.Now()
	in := start0(t, e.config(t, "tput", ""))
	kd := timeToVisible(t, bs, n, start, e.tp.Decided()...)
	in.stop(t)

	rawRate, kdRate := float64(n)/raw.Seconds(), float64(n)/kd.Seconds()
	t.Logf("throughput over %d events, commit interval 50ms: raw transactional pipe %.0f events/s (%v), kdedup %.0f events/s (%v): ratio %.2f",
		n, rawRate, raw.Round(time.Millisecond), kdRate, kd.Round(time.Millisecond), kdRate/rawRate)
	if kdRate < rawRate/10 {
		t.Errorf("kdedup is more than 10x slower than the raw pipe")
	}
}
