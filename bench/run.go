package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/embedded"
	"github.com/kdedup/kdedup/internal/e2e"
)

// The headers the bench marks its records with: the latency phase's
// events (phaseHeader: phaseLatency), and the sentinels that end a run.
const (
	phaseHeader  = "bench.phase"
	phaseLatency = "latency"
	// sentHeader carries when a latency-phase event was produced (Unix
	// nanoseconds): its event time is eventLag behind.
	sentHeader     = "bench.sent"
	sentinelHeader = "bench.sentinel"
)

// stallTimeout is how long a wait for results may see none arrive before
// the run fails.
const stallTimeout = time.Minute

// stopTimeout is how long a child may take to exit after SIGTERM
// (kdedup promises 30s, docs/operations.md).
const stopTimeout = 30 * time.Second

// Run runs the benchmark: for each round the raw pipe, then kdedup, each
// as a child process over its own copy of the workload (see the package
// documentation). It returns the report of every round, or the first
// error: options that do not validate, a broker that cannot be reached,
// a child that fails or exits early, or a pipe whose results are not
// exactly one per input record. Progress lines go to o.Out.
func Run(ctx context.Context, o Options) (Report, error) {
	o.EnsureDefaults()
	if err := o.Validate(); err != nil {
		return Report{}, err
	}
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return Report{}, fmt.Errorf("bench: finding the kdedup executable: %w", err)
		}
		o.Binary = exe
	}
	if st, err := os.Stat(o.Binary); err != nil {
		return Report{}, fmt.Errorf("bench: kdedup executable: %w", err)
	} else if st.IsDir() {
		return Report{}, fmt.Errorf("bench: kdedup executable %s is a directory", o.Binary)
	}
	dir := o.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "kdedup-bench")
		if err != nil {
			return Report{}, fmt.Errorf("bench: scratch directory: %w", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return Report{}, fmt.Errorf("bench: scratch directory: %w", err)
	}

	b := &bencher{o: o, dir: dir, log: o.Log, runID: strconv.FormatInt(time.Now().UnixNano(), 36)}
	rep := Report{
		Events: o.Events, Partitions: o.Partitions, CommitInterval: o.CommitInterval,
		LatencyDuration: o.LatencyDuration, DisableChangelog: o.DisableChangelog,
		Brokers: o.Brokers, CPUs: runtime.NumCPU(), Keys: o.Keys, Restore: o.Restore,
	}
	if o.Keys > 0 {
		rep.TTL = keysTTL(o.Keys, o.Events)
	}
	if len(o.Brokers) == 0 {
		// The broker's errors only: its warnings (a slow EndTxn) are
		// about the machine the bench loads on purpose.
		blog := o.Log.Level(max(o.Log.GetLevel(), zerolog.ErrorLevel))
		broker, err := embedded.Start(filepath.Join(dir, "broker"), 0, o.Partitions, blog)
		if err != nil {
			return Report{}, fmt.Errorf("bench: %w", err)
		}
		defer broker.Close()
		rep.Brokers, rep.Embedded = broker.Addrs(), true
	}
	b.brokers = rep.Brokers
	if err := b.connect(); err != nil {
		return Report{}, err
	}
	defer b.close()

	if err := b.warmUp(ctx); err != nil {
		return Report{}, err
	}
	for round := 1; round <= o.Rounds; round++ {
		var rd Round
		for _, k := range []kind{raw, kdedup} {
			if err := b.runPipe(ctx, round, k, &rd); err != nil {
				return rep, fmt.Errorf("bench: round %d, %s: %w", round, k, err)
			}
		}
		rep.Rounds = append(rep.Rounds, rd)
	}
	return rep, nil
}

// kind names a pipe.
type kind string

const (
	raw    kind = "raw"
	kdedup kind = "kdedup"
)

// bencher is one Run's clients and names.
type bencher struct {
	o       Options
	dir     string
	brokers []string
	runID   string
	log     zerolog.Logger

	admCl *kgo.Client
	adm   *kadm.Client
	// bulk produces the workload; paced the latency phase's events;
	// manual the sentinels, to partitions of its choosing.
	bulk, paced, manual *kgo.Client
}

func (b *bencher) conn(opts ...kgo.Opt) []kgo.Opt {
	return append([]kgo.Opt{kgo.SeedBrokers(b.brokers...), kgo.MetadataMinAge(250 * time.Millisecond)}, opts...)
}

// connect creates the clients.
func (b *bencher) connect() error {
	var err error
	mk := func(opts ...kgo.Opt) *kgo.Client {
		if err != nil {
			return nil
		}
		var cl *kgo.Client
		cl, err = kgo.NewClient(b.conn(opts...)...)
		return cl
	}
	b.admCl = mk()
	// The workload as fast as the broker takes it: large batches, a
	// linger that fills them. Idempotent, not transactional (franz-go's
	// default).
	b.bulk = mk(kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(200_000))
	// The latency phase: each record leaves at once, stamped when handed
	// over.
	b.paced = mk(kgo.ProducerLinger(time.Millisecond))
	b.manual = mk(kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))
	if err != nil {
		b.close()
		return fmt.Errorf("bench: brokers %s: %w", strings.Join(b.brokers, ","), err)
	}
	b.adm = kadm.NewClient(b.admCl)
	return nil
}

func (b *bencher) close() {
	for _, cl := range []*kgo.Client{b.bulk, b.paced, b.manual, b.admCl} {
		if cl != nil {
			cl.Close()
		}
	}
}

// warmUp has the broker set up what the first pipe would otherwise wait
// for, untimed: a fresh Apache Kafka creates its transaction state and
// consumer offsets topics on their first use, which took seconds of the
// first round's raw pipe. It initialises a transactional id of its own
// and asks for a group's coordinator until the broker answers both.
func (b *bencher) warmUp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	name := "kdedup-bench-" + b.runID + ".warm-up"
	cl, err := kgo.NewClient(b.conn(kgo.TransactionalID(name))...)
	if err != nil {
		return fmt.Errorf("bench: warming up the broker: %w", err)
	}
	defer cl.Close()
	if _, _, err := cl.ProducerID(ctx); err != nil {
		return fmt.Errorf("bench: warming up the broker: initialising a transactional id: %w", err)
	}
	for {
		groups, err := b.adm.DescribeGroups(ctx, name)
		if err == nil {
			err = groups.Error()
		}
		// A coordinator that says the group does not exist answered.
		if err == nil || errors.Is(err, kerr.GroupIDNotFound) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: warming up the broker: finding a group coordinator: %w", err)
		case <-time.After(250 * time.Millisecond): // polling: the broker sends no event for it
		}
	}
}

// pipeRun is one pipe of one round: its names and the topics its
// results land in.
type pipeRun struct {
	kind      kind
	label     string // "round 1/3 raw", for progress lines
	tp        *e2e.Topics
	group     string
	instance  string // the child's static instance id in group
	output    string // the raw pipe's
	changelog string // kdedup's
	// createChangelog is set for kdedup with its changelog on: the
	// bench creates the topic (compacted), and deletes it whenever it
	// exists.
	createChangelog bool
	results         []string
	// ttl, if not 0, is every stream's (Options.Keys).
	ttl time.Duration
	// preloaded and probed count the pre-load's events and the probes
	// produced.
	preloaded, probed int
}

func (b *bencher) newPipeRun(round int, k kind) *pipeRun {
	tp := e2e.NewTopics(fmt.Sprintf("kdedup-bench-%s.r%d-%s.", b.runID, round, k))
	pr := &pipeRun{kind: k, tp: tp, label: fmt.Sprintf("round %d/%d %s", round, b.o.Rounds, k)}
	switch k {
	case raw:
		pr.group, pr.instance = tp.Prefix+"raw-pipe", "raw"
		pr.output = tp.Prefix + "raw.out"
		pr.results = []string{pr.output}
	case kdedup:
		tp.Group = tp.Prefix + "kdedup"
		pr.group, pr.instance = tp.Group, kdedupInstance
		pr.changelog = tp.Prefix + "changelog"
		pr.createChangelog = !b.o.DisableChangelog
		pr.results = tp.Decided()
		if b.o.Keys > 0 {
			pr.ttl = keysTTL(b.o.Keys, b.o.Events)
		}
	}
	return pr
}

// eventLag is how far the workload's event times stay behind the clock:
// Apache Kafka 4 refuses records stamped more than an hour ahead of its
// own clock, so the throughput phase's times end about this far back, and
// the latency phase's follow them.
const eventLag = time.Hour

// runPipe runs one pipe of one round and puts its figures into rd. With
// Options.Keys, kdedup's timed phase follows the pre-load (and, with
// Options.Restore, the takeover and restart) on the same state.
func (b *bencher) runPipe(ctx context.Context, round int, k kind, rd *Round) error {
	var f Figures
	pr := b.newPipeRun(round, k)
	if err := b.createTopics(ctx, pr); err != nil {
		return err
	}
	defer b.cleanUp(pr)

	reader, err := newReader(b.conn(), pr.results)
	if err != nil {
		return err
	}
	rctx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	go reader.run(rctx)
	defer func() { stopReading(); <-reader.done }()

	n := b.o.Events
	// Event times end an hour before now (Apache Kafka refuses records
	// more than an hour ahead of its clock), and the latency phase goes
	// on from there: its results then measure kdedup in its steady state,
	// not the burst of retirements a jump of event time would cause.
	end := time.Now().Add(-eventLag)
	scale := k == kdedup && b.o.Keys > 0
	if scale {
		lay := newLayout(b.o.Keys, n, end)
		if err := b.scaleUp(ctx, pr, reader, round, lay, &rd.Scale); err != nil {
			return err
		}
	}
	w := pr.tp.NewWorkloadEnding(b.o.Seed, n, end)
	began := time.Now()
	if err := b.produceWorkload(ctx, w, n); err != nil {
		return err
	}
	fmt.Fprintf(b.o.Out, "%s: %s events produced in %.1fs\n", pr.label, thousands(float64(n)), time.Since(began).Seconds())

	start := time.Now()
	ch, err := b.startChild(pr, round, timedRole)
	if err != nil {
		return err
	}
	defer ch.kill() // a no-op once it exited

	if scale {
		// Restart to deciding: the first result of the timed phase.
		if _, err := reader.waitFor(ctx, ch, "the first result of the timed phase", func(c counts) bool { return c.bulk >= 1 }); err != nil {
			return err
		}
		rd.Scale.Deciding = time.Since(start)
		fmt.Fprintf(b.o.Out, "%s: restarted on %s keys: first result %.2fs after the start\n", pr.label, thousands(float64(b.o.Keys)), rd.Scale.Deciding.Seconds())
	}
	if err := b.throughputPhase(ctx, reader, ch, start, n, &f); err != nil {
		return err
	}
	if err := b.latencyPhase(ctx, reader, ch, pr, w, &f); err != nil {
		return err
	}
	if err := ch.stop(); err != nil {
		return err
	}
	if f.WholeLife {
		f.CPU, f.PeakRSS = ch.rusage()
	}
	if scale {
		if rd.Scale.Restores, err = ch.restores.result(); err != nil {
			return fmt.Errorf("%s log: %w", ch.name, err)
		}
		if len(rd.Scale.Restores) > 0 {
			fmt.Fprintf(b.o.Out, "%s: restarted on the state kept, yet %s\n", pr.label, describeRestores(rd.Scale.Restores))
		}
	}
	err = b.checkResults(ctx, reader, pr, n, &f)
	if k == raw {
		rd.Raw = f
	} else {
		rd.Kdedup = f
	}
	return err
}

// scaleUp pre-loads Options.Keys keys into the state of pr's kdedup and,
// with Options.Restore, measures a takeover (the state_dir deleted) and a
// restart (kept) on it. sc receives the figures.
func (b *bencher) scaleUp(ctx context.Context, pr *pipeRun, rd *reader, round int, lay layout, sc *Scale) error {
	if err := b.preload(ctx, pr, rd, round, lay, sc); err != nil {
		return err
	}
	if !b.o.Restore {
		return nil
	}
	var err error
	// The takeover's child deletes the state_dir before it starts
	// (role.freshState): a new host taking the partitions over.
	if sc.Takeover, err = b.probeStart(ctx, pr, rd, round, takeoverRole, lay); err != nil {
		return fmt.Errorf("takeover: %w", err)
	}
	if sc.Restart, err = b.probeStart(ctx, pr, rd, round, restartRole, lay); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	return nil
}

// throughputPhase waits for the results of the n events produced before
// the child started at start, then takes its CPU time and peak RSS so far
// from /proc (or, without /proc, marks f to take them at exit).
func (b *bencher) throughputPhase(ctx context.Context, rd *reader, ch *child, start time.Time, n int, f *Figures) error {
	if _, err := rd.waitFor(ctx, ch, "results of the throughput phase", func(c counts) bool { return c.bulk >= n }); err != nil {
		return err
	}
	f.Events, f.Elapsed = n, time.Since(start)
	b.snapshot(ch, f)
	return nil
}

// snapshot puts the running child's CPU time and peak RSS so far (from
// /proc) into f, or, without /proc, marks f to take them at exit.
func (b *bencher) snapshot(ch *child, f *Figures) {
	cpu, hwm, err := procSnapshot(ch.cmd.Process.Pid)
	if err != nil {
		b.log.Debug().Err(err).Msg("no /proc snapshot; CPU and peak RSS from rusage at exit")
		f.WholeLife = true
		return
	}
	f.CPU, f.PeakRSS = cpu, hwm
}

// latencyPhase produces events of w at half the rate the throughput
// phase reached, for LatencyDuration, and waits for their results.
func (b *bencher) latencyPhase(ctx context.Context, rd *reader, ch *child, pr *pipeRun, w *e2e.Workload, f *Figures) error {
	target := f.Rate() / 2
	f.LatencyEvents = max(1, int(target*b.o.LatencyDuration.Seconds()))
	fmt.Fprintf(b.o.Out, "%s: %s events/s; latency phase: %s events at %s events/s\n",
		pr.label, thousands(f.Rate()), thousands(float64(f.LatencyEvents)), thousands(target))
	sent, err := b.producePaced(ctx, w, f.LatencyEvents, target)
	if err != nil {
		return err
	}
	// The last event is due (n-1)/rate after the first.
	f.LatencyRate = target
	if f.LatencyEvents > 1 && sent > 0 {
		f.LatencyRate = min(target, float64(f.LatencyEvents-1)/sent.Seconds())
	}
	_, err = rd.waitFor(ctx, ch, "results of the latency phase", func(c counts) bool { return c.latency >= f.LatencyEvents })
	return err
}

// checkResults, once the child stopped, sends the sentinels (everything
// committed is visible once they are), requires exactly one result per
// input record of each phase, and takes the latency percentiles.
func (b *bencher) checkResults(ctx context.Context, rd *reader, pr *pipeRun, n int, f *Figures) error {
	if err := b.sendSentinels(ctx, pr.results); err != nil {
		return err
	}
	want := b.o.Partitions * len(pr.results)
	c, err := rd.waitFor(ctx, nil, "the sentinels", func(c counts) bool { return c.sentinels >= want })
	if err != nil {
		return err
	}
	if c.bulk != n || c.latency != f.LatencyEvents || c.preload != pr.preloaded || c.probes != pr.probed {
		return fmt.Errorf("%d results for %d input records of the throughput phase, %d for %d of the latency phase, %d for %d of the pre-load and %d for %d probes in %s: want exactly one per input record",
			c.bulk, n, c.latency, f.LatencyEvents, c.preload, pr.preloaded, c.probes, pr.probed, strings.Join(pr.results, ", "))
	}
	lat := rd.latencies()
	f.P50, f.P99 = percentile(lat, 50), percentile(lat, 99)
	fmt.Fprintf(b.o.Out, "%s: p50 %s, p99 %s (latency phase sent at %s events/s)\n", pr.label, millis(f.P50), millis(f.P99), thousands(f.LatencyRate))
	return nil
}

// createTopics creates the inputs and result topics of pr, and kdedup's
// changelog, with o.Partitions partitions each and time retention off
// (the workload's event times lie days back).
func (b *bencher) createTopics(ctx context.Context, pr *pipeRun) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	never := "-1"
	plain := map[string]*string{"retention.ms": &never}
	topics := append(slices.Clone(pr.tp.Inputs()), pr.results...)
	resps, err := b.adm.CreateTopics(ctx, int32(b.o.Partitions), -1, plain, topics...)
	if err == nil {
		err = resps.Error()
	}
	if err == nil && pr.createChangelog {
		compact := "compact"
		resps, err = b.adm.CreateTopics(ctx, int32(b.o.Partitions), -1, map[string]*string{"cleanup.policy": &compact}, pr.changelog)
		if err == nil {
			err = resps.Error()
		}
	}
	if err != nil {
		return fmt.Errorf("creating topics: %w", err)
	}
	return nil
}

// cleanUp deletes pr's topics and group; failures are only logged.
func (b *bencher) cleanUp(pr *pipeRun) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topics := append(slices.Clone(pr.tp.Inputs()), pr.results...)
	if pr.changelog != "" {
		topics = append(topics, pr.changelog)
	}
	resps, err := b.adm.DeleteTopics(ctx, topics...)
	if err == nil {
		for _, r := range resps {
			// A changelog kdedup was told not to write may not exist.
			if r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
				err = fmt.Errorf("%s: %w", r.Topic, r.Err)
			}
		}
	}
	if err != nil {
		b.log.Warn().Err(err).Strs("topics", topics).Msg("deleting the bench's topics")
	}
	// A static member stays in its group until its session times out;
	// remove it, so that the group can be deleted now.
	if _, err := b.adm.LeaveGroup(ctx, kadm.LeaveGroup(pr.group).InstanceIDs(pr.instance)); err != nil {
		b.log.Debug().Err(err).Str("group", pr.group).Msg("removing the bench's static member")
	}
	gresps, err := b.adm.DeleteGroups(ctx, pr.group)
	if err == nil {
		err = gresps.Error()
	}
	if err != nil {
		b.log.Debug().Err(err).Str("group", pr.group).Msg("deleting the bench's group")
	}
}

// produceWorkload sends n events of w and waits until every one is
// acknowledged.
func (b *bencher) produceWorkload(ctx context.Context, w *e2e.Workload, n int) error {
	if err := b.produce(ctx, n, w.Next, nil); err != nil {
		return fmt.Errorf("the workload: %w", err)
	}
	return nil
}

// producePaced sends n more events of w at rate events per second, each
// stamped with the time it is handed to the client and marked as the
// latency phase's, waits until every one is acknowledged, and returns
// how long the handing over took: (n-1)/rate, or more when the client
// could not take them that fast.
func (b *bencher) producePaced(ctx context.Context, w *e2e.Workload, n int, rate float64) (time.Duration, error) {
	var mu sync.Mutex
	var first error
	began := time.Now()
	var sent time.Duration
	for i := 0; i < n && ctx.Err() == nil; i++ {
		// Pacing, not synchronisation: the i-th event is due i/rate
		// seconds after the start; up to a millisecond's worth leave
		// together.
		if wait := time.Until(began.Add(time.Duration(float64(i) / rate * float64(time.Second)))); wait > time.Millisecond {
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
		}
		r := w.Next()
		now := time.Now()
		r.Headers = append(r.Headers,
			kgo.RecordHeader{Key: phaseHeader, Value: []byte(phaseLatency)},
			kgo.RecordHeader{Key: sentHeader, Value: strconv.AppendInt(nil, now.UnixNano(), 10)})
		r.Timestamp = now.Add(-eventLag)
		sent = now.Sub(began)
		b.paced.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	err := b.paced.Flush(ctx)
	if err == nil {
		err = ctx.Err()
	}
	mu.Lock()
	if err == nil {
		err = first
	}
	mu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("producing the latency phase's events: %w", err)
	}
	return sent, nil
}

// sendSentinels writes one sentinel record to every partition of topics.
func (b *bencher) sendSentinels(ctx context.Context, topics []string) error {
	var rs []*kgo.Record
	for _, t := range topics {
		for p := 0; p < b.o.Partitions; p++ {
			rs = append(rs, &kgo.Record{Topic: t, Partition: int32(p), Value: []byte("end of run"),
				Headers: []kgo.RecordHeader{{Key: sentinelHeader, Value: []byte(b.runID)}}})
		}
	}
	if err := b.manual.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		return fmt.Errorf("producing the sentinels: %w", err)
	}
	return nil
}

// counts are what a reader has seen.
type counts struct {
	// bulk counts results of the throughput phase, latency those of the
	// latency phase, preload those of the pre-load, probes those of the
	// probes, sentinels the sentinels.
	bulk, latency, preload, probes, sentinels int
}

func (c counts) String() string {
	s := fmt.Sprintf("%d results of the throughput phase, %d of the latency phase", c.bulk, c.latency)
	if c.preload > 0 || c.probes > 0 {
		s += fmt.Sprintf(", %d of the pre-load, %d of probes", c.preload, c.probes)
	}
	return s + fmt.Sprintf(", %d sentinels seen", c.sentinels)
}

// reader reads a pipe's result topics under read_committed from their
// start, counting results and taking each latency-phase result's
// latency.
type reader struct {
	cl   *kgo.Client
	done chan struct{}

	mu      sync.Mutex
	c       counts
	lat     []time.Duration
	lastErr error
	changed chan struct{} // closed and replaced at every change, when waited on
}

func newReader(conn []kgo.Opt, topics []string) (*reader, error) {
	cl, err := kgo.NewClient(append(conn, kgo.ConsumeTopics(topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return nil, fmt.Errorf("reader of %s: %w", strings.Join(topics, ", "), err)
	}
	return &reader{cl: cl, done: make(chan struct{})}, nil
}

// run reads until ctx ends, then closes the client.
func (r *reader) run(ctx context.Context) {
	defer close(r.done)
	defer r.cl.Close()
	for ctx.Err() == nil {
		fs := r.cl.PollFetches(ctx)
		now := time.Now()
		var c counts
		var lat []time.Duration
		fs.EachRecord(func(rec *kgo.Record) {
			switch phase(rec) {
			case phaseLatency:
				c.latency++
				lat = append(lat, now.Sub(sentAt(rec)))
			case phasePreload:
				c.preload++
			case phaseProbe:
				c.probes++
			case sentinelHeader:
				c.sentinels++
			default:
				c.bulk++
			}
		})
		var lastErr error
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				lastErr = fmt.Errorf("%s/%d: %w", t, p, err)
			}
		})
		r.mu.Lock()
		r.c.bulk += c.bulk
		r.c.latency += c.latency
		r.c.preload += c.preload
		r.c.probes += c.probes
		r.c.sentinels += c.sentinels
		r.lat = append(r.lat, lat...)
		if lastErr != nil {
			r.lastErr = lastErr
		}
		if r.changed != nil && (c != counts{}) {
			close(r.changed)
			r.changed = nil
		}
		r.mu.Unlock()
	}
}

// sentAt returns when the bench handed a latency-phase record to its
// producer (sentHeader).
func sentAt(rec *kgo.Record) time.Time {
	for _, h := range rec.Headers {
		if h.Key == sentHeader {
			if ns, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil {
				return time.Unix(0, ns)
			}
		}
	}
	return rec.Timestamp
}

// phase tells a latency-phase result (phaseLatency), a pre-load's
// (phasePreload), a probe's (phaseProbe) and a sentinel (sentinelHeader)
// from the rest ("").
func phase(rec *kgo.Record) string {
	for _, h := range rec.Headers {
		switch h.Key {
		case phaseHeader:
			return string(h.Value)
		case sentinelHeader:
			return sentinelHeader
		}
	}
	return ""
}

// latencies returns the latencies seen so far, sorted.
func (r *reader) latencies() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := slices.Clone(r.lat)
	slices.Sort(s)
	return s
}

// waitFor waits until cond holds for the counts and returns them. It
// fails when ctx ends, when ch (if not nil) exits first, or when for
// stallTimeout no record arrives and ch writes no log line.
func (r *reader) waitFor(ctx context.Context, ch *child, what string, cond func(counts) bool) (counts, error) {
	return r.waitForProgress(ctx, ch, what, cond, nil)
}

// waitForProgress is waitFor, calling progress (if not nil) with the
// counts whenever they changed.
func (r *reader) waitForProgress(ctx context.Context, ch *child, what string, cond func(counts) bool, progress func(counts)) (counts, error) {
	var exited <-chan struct{}
	var activity int64
	if ch != nil {
		exited = ch.done
		activity = ch.activity()
	}
	stall := time.NewTimer(stallTimeout)
	defer stall.Stop()
	for {
		r.mu.Lock()
		c, lastErr := r.c, r.lastErr
		met := cond(c)
		if !met && r.changed == nil {
			r.changed = make(chan struct{})
		}
		changed := r.changed
		r.mu.Unlock()
		if progress != nil {
			progress(c)
		}
		if met {
			return c, nil
		}
		select {
		case <-changed:
			stall.Reset(stallTimeout)
		case <-ctx.Done():
			return c, fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-exited:
			return c, fmt.Errorf("waiting for %s (%v): %s", what, c, ch.exitReport())
		case <-stall.C:
			// A child restoring its state logs its progress, at level
			// info, every second, and decides nothing until it is done.
			if a := ch.activity(); a != activity {
				activity = a
				stall.Reset(stallTimeout)
				continue
			}
			msg := fmt.Sprintf("waiting for %s: nothing arrived for %v (%v)", what, stallTimeout, c)
			if lastErr != nil {
				msg += fmt.Sprintf("; last fetch error: %v", lastErr)
			}
			if ch != nil {
				msg += "\n" + ch.name + " log (last lines):\n" + ch.tail.String()
			}
			return c, errors.New(msg)
		}
	}
}
