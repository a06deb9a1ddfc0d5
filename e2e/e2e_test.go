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
func setup(t *testing.T) *env {
	t.Helper()
	bs := realBrokers()
	if bs == nil {
		return fakeSetup(t)
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
func testSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("KDEDUP_CRASH_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	t.Logf("seed %d (rerun with KDEDUP_CRASH_SEED=%d)", seed, seed)
	return seed
}

// prefixFor returns a topic and group prefix of t's own on a shared
// cluster: its name and the time.
func prefixFor(t *testing.T) string {
	return regexp.MustCompile(`[^A-Za-z0-9._-]`).ReplaceAllString(t.Name(), "_") + "-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "."
}

// createInputs creates the input topics on a real cluster (kfake seeds
// them).
func (e *env) createInputs(t *testing.T) {
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

// fakeSetup starts an in-process kfake cluster with the input topics, for
// every test by default and for tests that inject faults into the broker
// always; those skip on a real cluster.
func fakeSetup(t *testing.T) *env {
	t.Helper()
	if realBrokers() != nil {
		t.Skip("injects faults into the in-process broker: runs in make test")
	}
	tp := e2e.NewTopics("")
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(e2e.Partitions, tp.Inputs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &env{bs: c.ListenAddrs(), tp: tp, fake: c}
}

// config returns kdedup's configuration for this test's cluster and names.
func (e *env) config(t *testing.T, instance, extra string) string {
	return e.tp.Config(e.bs, t.TempDir(), instance, e.security+extra)
}

// instance is one running kdedup process.
type instance struct {
	cmd        *exec.Cmd
	done       chan error
	logs       *logTail
	logFile    string        // the whole stderr
	processing chan struct{} // closed when it logs that it is processing
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

// restores counts "state restored" log lines of every instance: how often
// a restart found its state behind the committed offsets; rebuilds counts
// client sessions rebuilt after an unknown transaction outcome.
var restores, rebuilds, changelogRestores struct {
	sync.Mutex
	n int
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
func start(t *testing.T, cfg string) *instance {
	t.Helper()
	return startEnv(t, cfg, nil)
}

// startEnv is start with environment variables (NAME=value) added.
func startEnv(t *testing.T, cfg string, env []string) *instance {
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
func start0(t *testing.T, cfg string, env ...string) *instance {
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
				restores.Lock()
				restores.n++
				restores.Unlock()
				if strings.Contains(line, `"from":"changelog"`) {
					changelogRestores.Lock()
					changelogRestores.n++
					changelogRestores.Unlock()
				}
			}
			if strings.Contains(line, `"message":"rebuilding the client session"`) {
				rebuilds.Lock()
				rebuilds.n++
				rebuilds.Unlock()
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

// stop sends SIGTERM and requires exit 0 within 30s.
func (in *instance) stop(t *testing.T) {
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

func producerClient(t *testing.T, e *env) *kgo.Client {
	cl, err := kgo.NewClient(e.conn(kgo.ProducerLinger(5 * time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// produce sends n workload events and returns how many it sent.
func produce(ctx context.Context, t *testing.T, cl *kgo.Client, w *e2e.Workload, n int) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for i := 0; i < n; i++ {
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
	}
	wg.Wait()
	if first != nil {
		t.Fatalf("producing the workload: %v", first)
	}
}

// verify reads inputs, outputs and audit back under read_committed and
// checks them against the model.
func (e *env) verify(t *testing.T, inputs int) *e2e.Report {
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
	produce(context.Background(), t, producerClient(t, e), w, n)
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
}

// TestCrashRecovery produces events while the kdedup binary is SIGKILLed
// at random moments (and now and then stopped with SIGTERM) and restarted
// with the same state directory; the result must still be exactly once.
func TestCrashRecovery(t *testing.T) {
	e := setup(t)
	seed := testSeed(t)
	cfg := e.config(t, "crashy", "")
	const rounds, perRound = 15, 2_000
	kills, terms, in := crashLoop(t, e, cfg, seed, rounds, perRound)
	n := rounds * perRound
	rep := e.verify(t, n)
	in.stop(t)
	restores.Lock()
	restored := restores.n
	restores.Unlock()
	t.Logf("crash recovery: %d SIGKILLs, %d SIGTERMs, %d partition restores: %v", kills, terms, restored, rep)
	if !rep.OK() {
		t.Fatalf("seed %d: %v\nlast kdedup log:\n%s", seed, rep, in.logs)
	}
}

// crashLoop produces rounds of events while SIGKILLing the kdedup binary
// at a random moment of each round (every fourth round a SIGTERM instead)
// and restarting it with the same configuration. It returns the kills, the
// stops and the instance left running.
func crashLoop(t *testing.T, e *env, cfg string, seed uint64, rounds, perRound int) (kills, terms int, in *instance) {
	rng := rand.New(rand.NewPCG(seed, 1))
	w := e.tp.NewWorkload(seed, rounds*perRound)
	pcl := producerClient(t, e)
	in = start(t, cfg)
	for round := 0; round < rounds; round++ {
		done := make(chan struct{})
		go func() {
			defer close(done)
			produce(context.Background(), t, pcl, w, perRound)
		}()
		time.Sleep(time.Duration(50+rng.IntN(700)) * time.Millisecond) // the random crash point itself
		if round%4 == 3 {
			in.stop(t)
			terms++
		} else {
			in.kill()
			kills++
		}
		// Restart before waiting for the round's events: with the
		// embedded broker they cannot be acknowledged until it is back.
		in = start(t, cfg)
		<-done
	}
	return kills, terms, in
}

// TestAtLeastOnce runs the crash loop under guarantee: at_least_once.
// Nothing may be lost or decided wrongly; a kill may re-emit what was
// decided since the last offset commit, so the re-emitted records are
// bounded by the records in flight at the kills.
func TestAtLeastOnce(t *testing.T) {
	e := setup(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	cfg := e.config(t, "alos", "guarantee: at_least_once\n")
	const rounds, perRound = 8, 2_000
	kills, terms, in := crashLoop(t, e, cfg, seed, rounds, perRound)
	rep := e.verify(t, rounds*perRound)
	in.stop(t)
	t.Logf("at least once: %d SIGKILLs, %d SIGTERMs: %v", kills, terms, rep)
	if rep.Lost != 0 || rep.Wrong != 0 {
		t.Fatalf("seed %d: records lost or decided wrongly under at_least_once: %v", seed, rep)
	}
	if rep.Duplicated > kills*perRound {
		t.Fatalf("seed %d: %d records re-emitted after %d kills: more than the kills interrupted", seed, rep.Duplicated, kills)
	}
}
