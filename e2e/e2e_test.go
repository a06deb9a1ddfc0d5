package e2e_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kdedup/kdedup/internal/e2e"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kdedup-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "kdedup")
	build := exec.Command("go", "build", "-o", binary, "../cmd/kdedup")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building kdedup:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one test's cluster and names.
type env struct {
	bs   []string
	tp   *e2e.Topics
	fake *kfake.Cluster // nil on a real cluster
	// secure are the client options (TLS, SASL) the cluster requires;
	// security the matching kdedup configuration and password.
	secure   []kgo.Opt
	security string
	password string
}

// conn returns the client options that reach the cluster.
func (e *env) conn(extra ...kgo.Opt) []kgo.Opt {
	return append(append([]kgo.Opt{kgo.SeedBrokers(e.bs...)}, e.secure...), extra...)
}

// realBrokers returns KDEDUP_TEST_BROKERS: the real cluster make
// test-kafka points the suite at, or nil.
func realBrokers() []string {
	if b := os.Getenv("KDEDUP_TEST_BROKERS"); b != "" {
		return strings.Split(b, ",")
	}
	return nil
}

// setup returns the cluster to test against: with KDEDUP_TEST_BROKERS set,
// that real cluster, with topics and group under a prefix of this test's
// own and its input topics created; else a fresh in-process kfake cluster
// with the input topics seeded.
func setup(t testing.TB, opts ...setupOpt) *env {
	t.Helper()
	bs := realBrokers()
	if bs == nil {
		return fakeSetup(t, opts...)
	}
	e := &env{bs: bs, tp: e2e.NewTopics(prefixFor(t))}
	t.Logf("real cluster %v, topics and group under %q", bs, e.tp.Prefix)
	e.createInputs(t)
	return e
}

// split separates output records from audit records.
func (e *env) split(decided []*kgo.Record) (outs, audits []*kgo.Record) {
	for _, r := range decided {
		if r.Topic == e.tp.Audit {
			audits = append(audits, r)
		} else {
			outs = append(outs, r)
		}
	}
	return outs, audits
}

// testSeed returns the seed of a randomized test: KDEDUP_CRASH_SEED when
// set (to rerun a failure), else the time. It logs how to rerun.
func testSeed(t testing.TB) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("KDEDUP_CRASH_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	t.Logf("seed %d (rerun with KDEDUP_CRASH_SEED=%d)", seed, seed)
	return seed
}

// prefixFor returns a topic and group prefix of t's own on a shared
// cluster: its name and the time.
func prefixFor(t testing.TB) string {
	return regexp.MustCompile(`[^A-Za-z0-9._-]`).ReplaceAllString(t.Name(), "_") + "-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "."
}

// createInputs creates the input topics on a real cluster (kfake seeds
// them).
func (e *env) createInputs(t testing.TB) {
	t.Helper()
	cl, err := kgo.NewClient(e.conn()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopics(ctx, e2e.Partitions, -1, nil, e.tp.Inputs()...)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("creating the input topics: %v", err)
	}
}

// setupOpt changes the cluster setup and fakeSetup start.
type setupOpt func(*setupConf)

type setupConf struct{ brokers int }

// brokers runs the in-process cluster with n brokers (kfake.NumBrokers)
// instead of one: partition leaders, the group coordinator and the
// transaction coordinator then sit on different brokers, as on a real
// cluster. KDEDUP_TEST_KFAKE_BROKERS overrides it, for every test. On a
// real cluster it changes nothing.
func brokers(n int) setupOpt { return func(c *setupConf) { c.brokers = n } }

// threeBrokers is brokers(3): the crash, scale-out, repartition and fault
// tests run on it in make test.
var threeBrokers = brokers(3)

// fakeSetup starts an in-process kfake cluster with the input topics, for
// every test by default and for tests that inject faults into the broker
// always; those skip on a real cluster.
func fakeSetup(t testing.TB, opts ...setupOpt) *env {
	t.Helper()
	if realBrokers() != nil {
		t.Skip("injects faults into the in-process broker: runs in make test")
	}
	conf := setupConf{brokers: 1}
	for _, o := range opts {
		o(&conf)
	}
	if s := os.Getenv("KDEDUP_TEST_KFAKE_BROKERS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("KDEDUP_TEST_KFAKE_BROKERS=%q: want a number of brokers", s)
		}
		conf.brokers = n
	}
	tp := e2e.NewTopics("")
	c, err := kfake.NewCluster(kfake.NumBrokers(conf.brokers), kfake.SeedTopics(e2e.Partitions, tp.Inputs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if conf.brokers > 1 {
		t.Logf("in-process cluster of %d brokers", conf.brokers)
	}
	return &env{bs: c.ListenAddrs(), tp: tp, fake: c}
}

// config returns kdedup's configuration for this test's cluster and names.
func (e *env) config(t testing.TB, instance, extra string) string {
	return e.tp.Config(e.bs, t.TempDir(), instance, e.security+extra)
}

// instance is one running kdedup process.
type instance struct {
	cmd        *exec.Cmd
	done       chan error
	logs       *logTail
	logFile    string        // the whole stderr
	processing chan struct{} // closed when it logs that it is processing
	// restores counts its "state restored" lines: a partition whose state
	// was behind the group's committed offset when it got it (after a
	// kill between the Kafka commit and the Pebble commit, or a handover);
	// changelogRestores those restored from the changelog; rebuilds its
	// client sessions rebuilt after an unknown transaction outcome.
	restores, changelogRestores, rebuilds counter
}

// counter counts log lines of one instance; a test can wait for a count.
type counter struct {
	mu      sync.Mutex
	n       int
	changed chan struct{} // closed and replaced at every add, when waited on
}

func (c *counter) add() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	if c.changed != nil {
		close(c.changed)
		c.changed = nil
	}
}

func (c *counter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// wait blocks until the count reaches n or ctx ends.
func (c *counter) wait(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		if c.n >= n {
			c.mu.Unlock()
			return nil
		}
		if c.changed == nil {
			c.changed = make(chan struct{})
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// total sums a counter over instances.
func total(ins []*instance, c func(*instance) *counter) int {
	n := 0
	for _, in := range ins {
		n += c(in).get()
	}
	return n
}

// dump makes a stuck kdedup print every goroutine's stack (SIGQUIT) into
// its log file and returns the file's path.
func (in *instance) dump() string {
	_ = in.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-in.done:
	case <-time.After(10 * time.Second):
	}
	return in.logFile
}

// logTail keeps the last lines of a process's log for failure reports.
type logTail struct {
	mu    sync.Mutex
	lines []string
}

func (l *logTail) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, s)
	if len(l.lines) > 200 {
		l.lines = l.lines[len(l.lines)-200:]
	}
}

func (l *logTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// start runs kdedup with cfg and waits until it logs that it is
// processing.
func start(t testing.TB, cfg string) *instance {
	t.Helper()
	return startEnv(t, cfg, nil)
}

// startEnv is start with environment variables (NAME=value) added.
func startEnv(t testing.TB, cfg string, env []string) *instance {
	t.Helper()
	in := start0(t, cfg, env...)
	select {
	case <-in.processing:
	case err := <-in.done:
		t.Fatalf("kdedup exited before processing: %v\n%s", err, in.logs)
	case <-time.After(60 * time.Second):
		_ = in.cmd.Process.Kill()
		t.Fatalf("kdedup did not start processing within 60s\n%s", in.logs)
	}
	return in
}

// start0 runs kdedup with cfg and env added to the environment, and
// returns at once.
func start0(t testing.TB, cfg string, env ...string) *instance {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "kdedup.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "run", "--config", path)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KDEDUP_TEST_") { // the suite's, not kdedup's
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf, err := os.CreateTemp("", "kdedup-e2e-*.log")
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{cmd: cmd, done: make(chan error, 1), logs: &logTail{}, logFile: logf.Name(), processing: make(chan struct{})}
	processing := in.processing
	go func() {
		defer logf.Close()
		sc := bufio.NewScanner(io.TeeReader(stderr, logf))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			in.logs.add(line)
			if strings.Contains(line, `"message":"state restored"`) {
				in.restores.add()
				if strings.Contains(line, `"from":"changelog"`) {
					in.changelogRestores.add()
				}
			}
			if strings.Contains(line, `"message":"rebuilding the client session"`) {
				in.rebuilds.add()
			}
			if strings.Contains(line, `"message":"processing"`) {
				once.Do(func() { close(processing) })
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		in.done <- cmd.Wait()
	}()
	return in
}

// running fails t if the process has exited; when says at which point
// of the test (a process that exits by itself is a failure in every test
// but the ones that kill it).
func (in *instance) running(t testing.TB, when string) {
	t.Helper()
	select {
	case err := <-in.done:
		t.Fatalf("kdedup exited %s: %v\n%s", when, err, in.logs)
	default:
	}
}

// stop sends SIGTERM and requires exit 0 within 30s.
func (in *instance) stop(t testing.TB) {
	t.Helper()
	_ = in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-in.done:
		if err != nil {
			t.Fatalf("kdedup exited with %v after SIGTERM\n%s", err, in.logs)
		}
	case <-time.After(30 * time.Second):
		_ = in.cmd.Process.Kill()
		t.Fatalf("kdedup did not exit within 30s of SIGTERM\n%s", in.logs)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (in *instance) kill() {
	_ = in.cmd.Process.Kill()
	<-in.done
}

func producerClient(t testing.TB, e *env) *kgo.Client {
	cl, err := kgo.NewClient(e.conn(kgo.ProducerLinger(5 * time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// produce sends n workload events and waits for them to be acknowledged.
// It never stops the test itself, so it may run on any goroutine; see
// mustProduce for the test goroutine.
func produce(ctx context.Context, cl *kgo.Client, w *e2e.Workload, n int) error {
	return <-startProducing(ctx, cl, w, n, 0).done
}

// mustProduce is produce on the test goroutine: an error stops the test.
func mustProduce(t *testing.T, cl *kgo.Client, w *e2e.Workload, n int) {
	t.Helper()
	if err := produce(context.Background(), cl, w, n); err != nil {
		t.Fatalf("producing the workload: %v", err)
	}
}

// production is a workload being produced on a goroutine of its own.
type production struct {
	// sent counts the events handed to the client so far (not yet
	// acknowledged).
	sent counter
	// done receives the end: nil once every event is acknowledged, or the
	// first error.
	done chan error
}

// startProducing sends n workload events at rate events per second (0:
// as fast as the client takes them), in a batch every 10ms, and returns
// at once.
func startProducing(ctx context.Context, cl *kgo.Client, w *e2e.Workload, n, rate int) *production {
	p := &production{done: make(chan error, 1)}
	go func() {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var first error
		const tick = 10 * time.Millisecond
		began := time.Now()
		for i := 0; i < n; i++ {
			if rate > 0 && i%max(1, rate/100) == 0 {
				// Pacing, not synchronisation: the i-th event is due
				// i/rate seconds after the start.
				if wait := time.Until(began.Add(time.Duration(i) * time.Second / time.Duration(rate))); wait > tick/2 {
					time.Sleep(wait)
				}
			}
			wg.Add(1)
			cl.Produce(ctx, w.Next(), func(_ *kgo.Record, err error) {
				defer wg.Done()
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			})
			p.sent.add()
		}
		wg.Wait()
		p.done <- first
	}()
	return p
}

// wait waits for the production to end on the test goroutine and stops
// the test if it failed.
func (p *production) wait(t *testing.T) {
	t.Helper()
	if err := <-p.done; err != nil {
		t.Fatalf("producing the workload: %v", err)
	}
}

// verify reads inputs, outputs and audit back under read_committed and
// checks them against the model.
func (e *env) verify(t testing.TB, inputs int) *e2e.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	in, err := e2e.ReadAll(ctx, e.conn(), inputs, time.Second, e.tp.Inputs()...)
	if err != nil {
		t.Fatal(err)
	}
	// Every input becomes exactly one output or audit record.
	decided, err := e2e.ReadAll(ctx, e.conn(), inputs, 2*time.Second, e.tp.Decided()...)
	if err != nil {
		t.Logf("reading outputs: %v", err)
	}
	outs, audits := e.split(decided)
	return e.tp.Check(in, outs, audits)
}

// TestExactlyOnce runs a workload with every kind of decision through the
// kdedup binary and checks output and audit record by record against the
// model; then stops it with SIGTERM, which must exit 0.
func TestExactlyOnce(t *testing.T) {
	e := setup(t)
	in := start(t, e.config(t, "one", ""))
	const n = 20_000
	w := e.tp.NewWorkload(1, n)
	mustProduce(t, producerClient(t, e), w, n)
	rep := e.verify(t, n)
	in.stop(t)
	t.Logf("exactly once: %v", rep)
	if !rep.OK() {
		t.Fatalf("%v\nkdedup log:\n%s", rep, in.logs)
	}
	for _, reason := range []string{"first_seen", "duplicate", "conflict", "invalid_key", "missing_key", "malformed"} {
		if rep.ByReason[reason] == 0 {
			t.Errorf("the workload never produced %s: %v", reason, rep)
		}
	}
	// The settings only some decisions depend on must have decided some.
	for _, x := range []string{e2e.ExFingerprint, e2e.ExRetired, e2e.ExRefreshed, e2e.ExKeptLive, e2e.ExCompared, e2e.ExEdge} {
		if rep.Exercised[x] == 0 {
			t.Errorf("the workload never reached %s: %v", x, rep)
		}
	}
}

// TestCrashRecovery produces events while the kdedup binary is SIGKILLed
// (and now and then stopped with SIGTERM) and restarted with the same
// state directory; the result must still be exactly once. On the
// in-process cluster (three brokers) every third SIGKILL lands as kdedup
// commits (killAtCommit): between the Kafka commit and the Pebble commit,
// so that a restart must find its state behind the committed offsets and
// restore it; the test requires that to have happened.
func TestCrashRecovery(t *testing.T) {
	e := setup(t, threeBrokers)
	seed := testSeed(t)
	const name = "crashy"
	cfg := e.config(t, name, "")
	o := crashOpts{rounds: 15, perRound: 2_000, rate: 2_000, aimEvery: 3, txnID: e.tp.Group + "-" + name}
	run := crashRounds(t, e, cfg, seed, o)
	n := o.rounds * o.perRound
	rep := e.verify(t, n)
	run.in.stop(t)
	restored := total(run.instances, func(in *instance) *counter { return &in.restores })
	t.Logf("crash recovery: %d SIGKILLs (%d of them at a commit), %d SIGTERMs, %d partition restores by this test's instances: %v",
		run.kills, run.aimed, run.terms, restored, rep)
	if !rep.OK() {
		t.Fatalf("seed %d: %v\nlast kdedup log:\n%s", seed, rep, run.in.logs)
	}
	if e.fake == nil {
		return // no aimed kills on a real cluster: random ones may miss the window
	}
	if run.aimed == 0 {
		t.Fatalf("seed %d: no SIGKILL landed at a commit", seed)
	}
	if restored == 0 {
		t.Fatalf("seed %d: %d SIGKILLs at a commit, yet no restart found its state behind the committed offsets", seed, run.aimed)
	}
}

// crashOpts shape a crash loop.
type crashOpts struct {
	rounds, perRound int
	// rate paces each round's events, per second (0: all at once).
	rate int
	// aimEvery makes every aimEvery-th SIGKILL, on the in-process
	// cluster, land at a commit of transactional id txnID
	// (killAtCommit) rather than at a random moment; 0: none.
	aimEvery int
	txnID    string
	// caughtUp waits before each round until the group's committed
	// offsets reach the inputs' ends: a kill then interrupts only
	// records of its own round, never a backlog.
	caughtUp bool
}

// crashRun is what a crash loop did.
type crashRun struct {
	kills, terms, aimed int
	instances           []*instance // every instance started, in order
	in                  *instance   // the one left running
}

// crashLoop is crashRounds with unpaced rounds and only random kills. It
// returns the kills, the stops and the instance left running.
func crashLoop(t *testing.T, e *env, cfg string, seed uint64, rounds, perRound int) (kills, terms int, in *instance) {
	run := crashRounds(t, e, cfg, seed, crashOpts{rounds: rounds, perRound: perRound})
	return run.kills, run.terms, run.in
}

// crashRounds produces rounds of events while SIGKILLing the kdedup
// binary at a random moment of each round (every fourth round a SIGTERM
// instead) and restarting it with the same configuration.
func crashRounds(t *testing.T, e *env, cfg string, seed uint64, o crashOpts) *crashRun {
	rng := rand.New(rand.NewPCG(seed, 1))
	w := e.tp.NewWorkload(seed, o.rounds*o.perRound)
	pcl := producerClient(t, e)
	run := &crashRun{}
	run.in = start(t, cfg)
	run.instances = append(run.instances, run.in)
	for round := 0; round < o.rounds; round++ {
		if o.caughtUp {
			e.waitCaughtUp(t, round*o.perRound)
		}
		p := startProducing(context.Background(), pcl, w, o.perRound, o.rate)
		delay := time.Duration(50+rng.IntN(700)) * time.Millisecond // the random crash point
		switch {
		case round%4 == 3:
			time.Sleep(delay)
			run.in.stop(t)
			run.terms++
		case o.aimEvery > 0 && e.fake != nil && run.kills%o.aimEvery == 0:
			// The random moment, as a share of the round's events sent
			// (10% to 80%): events are still to be decided after it, so
			// a commit follows it whatever the rate.
			at := o.perRound/10 + int(int64(o.perRound)*7/10*int64(delay-50*time.Millisecond)/int64(700*time.Millisecond))
			if e.killAtCommit(run.in, o.txnID, p, at) {
				run.aimed++
			}
			run.kills++
		default:
			time.Sleep(delay)
			run.in.kill()
			run.kills++
		}
		// Restart before waiting for the round's events: with the
		// embedded broker they cannot be acknowledged until it is back.
		run.in = start(t, cfg)
		run.instances = append(run.instances, run.in)
		p.wait(t)
	}
	return run
}

// killAtCommit waits until p has sent at events, then SIGKILLs in as the
// broker receives its next request to commit a transaction (EndTxn with
// commit set, from transactional id txnID): kfake still commits the
// transaction, but kdedup
// never hears so and never writes the transaction's state changes to
// Pebble. That is a kill between the Kafka commit and the Pebble commit,
// a window of a millisecond or so that random kills seldom hit: the
// restart must find its state behind the committed offsets and restore.
// It reports whether in died that way; with no commit within 10s it is
// killed anyway.
func (e *env) killAtCommit(in *instance, txnID string, p *production, at int) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = p.sent.wait(ctx, at) // the random moment: the commit after it is the target
	var mu sync.Mutex
	armed, fired := true, make(chan struct{})
	e.fake.ControlKey(int16(kmsg.EndTxn), func(req kmsg.Request) (kmsg.Response, error, bool) {
		end, ok := req.(*kmsg.EndTxnRequest)
		if !ok || end.TransactionalID != txnID || !end.Commit {
			return nil, nil, false
		}
		e.fake.DropControl()
		mu.Lock()
		defer mu.Unlock()
		if armed {
			armed = false
			_ = in.cmd.Process.Kill() // before the broker applies the commit, which it then does
			close(fired)
		}
		return nil, nil, false // not handled: the broker commits as usual
	})
	select {
	case <-fired:
	case <-time.After(10 * time.Second):
	}
	mu.Lock()
	hit := !armed
	armed = false // a control still installed lets the next EndTxn pass
	mu.Unlock()
	in.kill()
	return hit
}

// waitCaughtUp waits until the group has committed an offset at the end
// of every input partition and at least produced records are in the
// inputs: everything produced so far is decided and committed.
func (e *env) waitCaughtUp(t *testing.T, produced int) {
	t.Helper()
	if produced == 0 {
		return
	}
	cl, err := kgo.NewClient(e.conn()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		lag, sum, err := e.groupLag(ctx, adm)
		if err != nil {
			t.Fatalf("waiting for the group to catch up: %v", err)
		}
		if lag == 0 && sum >= int64(produced) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the group did not catch up within 2m: lag %d", lag)
		case <-time.After(50 * time.Millisecond): // polling: the broker sends no event for it
		}
	}
}

// TestAtLeastOnce runs the crash loop under guarantee: at_least_once.
// Nothing may be lost or decided wrongly; a kill may re-emit what was
// decided since the last offset commit, and no more.
func TestAtLeastOnce(t *testing.T) {
	e := setup(t)
	seed := testSeed(t)
	cfg := e.config(t, "alos", "guarantee: at_least_once\n")
	// Rounds start with kdedup caught up and are produced at a steady rate
	// it keeps up with, so that at any moment it holds decided but
	// uncommitted records of one commit interval: those that arrived while
	// the batch was open, plus those that arrived while the previous
	// batch's commit was in flight (it decides nothing meanwhile), the
	// same again for a commit that takes no longer than the interval. A
	// kill re-emits those: at most 2 × rate × commit interval records.
	const rounds, perRound, rate = 8, 2_000, 2_000
	const interval = 50 * time.Millisecond // commit_interval of e2e.Topics.Config
	run := crashRounds(t, e, cfg, seed, crashOpts{rounds: rounds, perRound: perRound, rate: rate, caughtUp: true})
	rep := e.verify(t, rounds*perRound)
	run.in.stop(t)
	perKill := int(2 * rate * interval.Seconds())
	t.Logf("at least once: %d SIGKILLs, %d SIGTERMs, re-emitted %d (bound %d × %d): %v", run.kills, run.terms, rep.Duplicated, run.kills, perKill, rep)
	if rep.Lost != 0 || rep.Wrong != 0 {
		t.Fatalf("seed %d: records lost or decided wrongly under at_least_once: %v", seed, rep)
	}
	if rep.Duplicated > run.kills*perKill {
		t.Fatalf("seed %d: %d records re-emitted after %d kills: more than %d a kill (2 commit intervals of %v at %d events/s)",
			seed, rep.Duplicated, run.kills, perKill, interval, rate)
	}
}

// groupLag returns the group's lag over the inputs (each partition's end
// offset less the group's committed offset; a partition never committed
// counts whole) and the inputs' end offsets summed.
func (e *env) groupLag(ctx context.Context, adm *kadm.Client) (lag, ends int64, err error) {
	end, err := adm.ListEndOffsets(ctx, e.tp.Inputs()...)
	if err == nil {
		err = end.Error()
	}
	var committed kadm.OffsetResponses
	if err == nil {
		committed, err = adm.FetchOffsets(ctx, e.tp.Group)
	}
	if err == nil {
		err = committed.Error()
	}
	if err != nil {
		return 0, 0, err
	}
	end.Each(func(o kadm.ListedOffset) {
		ends += o.Offset
		if c, ok := committed.Lookup(o.Topic, o.Partition); ok && c.At >= 0 {
			lag += o.Offset - c.At
		} else {
			lag += o.Offset
		}
	})
	return lag, ends, nil
}
