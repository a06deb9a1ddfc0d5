package e2e_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/bench"
	"github.com/kdedup/kdedup/internal/e2e"
)

// timeToVisible returns how long until n records of topics are visible
// under read_committed, measured from start.
func timeToVisible(e *env, n int, start time.Time, topics ...string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(e.conn(kgo.ConsumeTopics(topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	seen := 0
	for seen < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return 0, fmt.Errorf("only %d of %d records visible in %v after 5m", seen, n, topics)
		}
		seen += len(fs.Records())
	}
	return time.Since(start), nil
}

// BenchmarkThroughput measures kdedup against the raw transactional pipe
// (bench.RawPipe, here on a goroutine of the test process; kdedup bench
// runs it as a process of its own and measures CPU, memory and latency
// too) on the same in-process broker and input, with the same commit
// interval:
// each is timed from its start until every input's result is visible
// under read_committed. It reports both rates and their ratio
// (kdedup_events/s, raw_events/s, kdedup/raw); kdedup's results are then
// checked against the model, untimed. KDEDUP_THROUGHPUT_EVENTS sets the
// input size (default 100,000):
//
//	go test -run '^$' -bench Throughput -benchtime 1x ./e2e
//
// Allocations are not reported: kdedup runs as a process of its own, and
// this process's allocations are the broker's and the readers'.
func BenchmarkThroughput(b *testing.B) {
	n := 100_000
	if s := os.Getenv("KDEDUP_THROUGHPUT_EVENTS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			b.Fatalf("KDEDUP_THROUGHPUT_EVENTS=%q: want a positive number of events", s)
		}
		n = v
	}
	var raw, kd time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		r, k := throughputOnce(b, n)
		raw, kd = raw+r, kd+k
	}
	events := float64(n) * float64(b.N)
	rawRate, kdRate := events/raw.Seconds(), events/kd.Seconds()
	b.ReportMetric(kdRate, "kdedup_events/s")
	b.ReportMetric(rawRate, "raw_events/s")
	b.ReportMetric(kdRate/rawRate, "kdedup/raw")
	b.Logf("throughput over %d events, commit interval 50ms: raw transactional pipe %.0f events/s, kdedup %.0f events/s: ratio %.2f",
		n, rawRate, kdRate, kdRate/rawRate)
}

// throughputOnce produces n events into a fresh cluster and times the raw
// pipe, then kdedup, over them (the benchmark timer runs only then).
func throughputOnce(b *testing.B, n int) (raw, kd time.Duration) {
	e := setup(b)
	rawOut := e.tp.Prefix + "raw.out"
	if err := produce(context.Background(), producerClient(b, e), e.tp.NewWorkload(7, n), n); err != nil {
		b.Fatalf("producing the workload: %v", err)
	}
	cl, err := kgo.NewClient(e.conn()...)
	if err != nil {
		b.Fatal(err)
	}
	resp, err := kadm.NewClient(cl).CreateTopics(context.Background(), e2e.Partitions, -1, nil, rawOut)
	if err == nil {
		err = resp.Error()
	}
	cl.Close()
	if err != nil {
		b.Fatalf("creating %s: %v", rawOut, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.StartTimer()
	start := time.Now()
	pipeErr := make(chan error, 1)
	go func() {
		pipeErr <- bench.RawPipe(ctx, bench.PipeOptions{Group: e.tp.Prefix + "raw-pipe", Inputs: e.tp.Inputs(), Output: rawOut, CommitInterval: 50 * time.Millisecond}, e.conn()...)
	}()
	raw, err = timeToVisible(e, n, start, rawOut)
	b.StopTimer()
	cancel()
	if err != nil {
		b.Fatalf("raw pipe: %v", err)
	}
	if err := <-pipeErr; err != nil {
		b.Fatalf("raw pipe: %v", err)
	}

	b.StartTimer()
	start = time.Now()
	in := start0(b, e.config(b, "tput", ""))
	kd, err = timeToVisible(e, n, start, e.tp.Decided()...)
	b.StopTimer()
	if err != nil {
		b.Fatalf("kdedup: %v\n%s", err, in.logs)
	}
	rep := e.verify(b, n)
	in.stop(b)
	if !rep.OK() {
		b.Fatalf("kdedup's results are wrong: %v", rep)
	}
	return raw, kd
}
