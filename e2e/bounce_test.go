package e2e_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/internal/e2e"
)

// TestBrokerBounce hard-bounces brokers of a real three-node cluster under
// a running kdedup: while events flow in, it SIGKILLs one broker, starts it
// again on its data and waits until it is registered and every partition's
// ISR is whole again, then does the same to a second broker. Each kill hits
// the broker that is kdedup's transaction coordinator at that moment (the
// worst case: the open transaction's state must move to another broker
// while partitions lose their leader), unless that is the broker just
// bounced, in which case another: two different brokers go down. kdedup
// must never exit, and under read_committed nothing may be lost, doubled or
// decided wrongly.
//
// It needs KDEDUP_TEST_BROKERS naming three brokers and KDEDUP_TEST_BOUNCE
// naming the script that kills and starts them (scripts/kafka.sh, run as
// "script kill N" and "script start N" with N the node id); make test-kafka
// sets both for its three-node cluster. KDEDUP_CRASH_SEED reruns a seed's
// timing.
func TestBrokerBounce(t *testing.T) {
	script := os.Getenv("KDEDUP_TEST_BOUNCE")
	if script == "" {
		t.Skip("kills real brokers: set KDEDUP_TEST_BOUNCE=scripts/kafka.sh and KDEDUP_TEST_BROKERS to its three-node cluster (make test-kafka does)")
	}
	if !filepath.IsAbs(script) {
		script = filepath.Join("..", script) // relative to the repository root; tests run in e2e
	}
	if len(realBrokers()) < 3 {
		t.Skipf("needs a real cluster of three brokers (scripts/kafka.sh up3), KDEDUP_TEST_BROKERS=%q", os.Getenv("KDEDUP_TEST_BROKERS"))
	}
	began := time.Now()
	e := setup(t)
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 11))
	const instanceID = "bouncy"
	txnID := e.tp.Group + "-" + instanceID // consumer.Options: Group + "-" + InstanceID

	acl, err := kgo.NewClient(e.conn()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(acl.Close)
	adm := kadm.NewClient(acl)
	b := &bouncer{t: t, script: script}
	t.Cleanup(b.restoreAll)

	in := start(t, e.config(t, instanceID, ""))
	// A steady flow, paced so that it spans the whole bounce window
	// whatever the brokers' speed; capped well below where the workload's
	// event times would reach the broker's clock.
	const maxEvents = 150_000
	f := startFlow(producerClient(t, e), e.tp.NewWorkload(seed, maxEvents), maxEvents, 100, 100*time.Millisecond)
	t.Cleanup(f.halt)

	alive := func(when string) {
		t.Helper()
		select {
		case err := <-in.done:
			t.Fatalf("kdedup exited %s: %v\n%s", when, err, in.logs)
		case err := <-f.done:
			f.done <- err
			if err != nil {
				t.Fatalf("producing %s: %v", when, err)
			}
			t.Fatalf("the flow ended %s after %d records: raise maxEvents", when, f.sent.Load())
		default:
		}
	}

	var victims []int32
	var downs, recoveries []time.Duration
	// Records flowing first: the client's first batch waits for its
	// producer id and metadata.
	for f.sent.Load() < 1000 {
		alive("before the first records were acknowledged")
		time.Sleep(50 * time.Millisecond) // polling the counter
	}
	for bounce := 0; bounce < 2; bounce++ {
		time.Sleep(time.Duration(500+rng.IntN(2000)) * time.Millisecond) // the random moment of the kill
		alive("before the kill")
		victim, role := b.pick(adm, txnID, e.tp.Group, victims)
		if m, err := adm.BrokerMetadata(context.Background()); err == nil && m.Controller == victim {
			role += ", the active controller"
		}
		atKill := f.sent.Load()
		b.kill(victim)
		victims = append(victims, victim)
		t.Logf("bounce %d: SIGKILLed node %d (%s) with %d records sent", bounce+1, victim, role, atKill)
		down := time.Duration(2000+rng.IntN(10_000)) * time.Millisecond // sometimes past broker.session.timeout.ms (9s): fenced first
		time.Sleep(down)
		alive("while a broker was down")
		restarted := time.Now()
		b.start(victim)
		waitISR(t, adm, victim)
		recovery := time.Since(restarted)
		downs, recoveries = append(downs, down.Round(time.Millisecond)), append(recoveries, recovery.Round(time.Millisecond))
		alive("after the broker came back")
		// The bounce must have happened under load: records acknowledged
		// since the kill. The test's own producer may still be backing
		// off from the dead node when its partitions are whole again
		// (seen once in CI: nothing acknowledged by then), so wait for
		// its next acknowledgment, bounded.
		for deadline := time.Now().Add(time.Minute); f.sent.Load() <= atKill; {
			if time.Now().After(deadline) {
				t.Fatalf("bounce %d: no record acknowledged in the minute after the broker came back (%d sent at the kill)", bounce+1, atKill)
			}
			time.Sleep(100 * time.Millisecond) // polling the counter the flow advances: no event to wait on
		}
		t.Logf("bounce %d: node %d down %v, back and every ISR whole %v after its start; %d records sent", bounce+1, victim, downs[bounce], recoveries[bounce], f.sent.Load())
	}
	time.Sleep(2 * time.Second) // records after the last bounce too
	alive("after the bounces")
	f.halt()
	if err := <-f.done; err != nil {
		t.Fatalf("producing: %v", err)
	}
	n := int(f.sent.Load())
	rep := e.verify(t, n)
	alive("while the results were read")
	in.stop(t)
	rebuilt := in.rebuilds.get()
	t.Logf("broker bounce: bounces=%d nodes=%v down=%v isr_back=%v records=%d lost=%d duplicated=%d wrong=%d session_rebuilds=%d in %v: %v",
		len(victims), victims, downs, recoveries, n, rep.Lost, rep.Duplicated, rep.Wrong, rebuilt, time.Since(began).Round(time.Second), rep)
	if !rep.OK() {
		t.Fatalf("seed %d: %v\nkdedup log %s; last lines:\n%s", seed, rep, in.logFile, in.logs)
	}
}

// bouncer kills and starts nodes with the cluster's script, and starts
// again at cleanup any node it left down.
type bouncer struct {
	t      *testing.T
	script string
	mu     sync.Mutex
	down   map[int32]bool
}

func (b *bouncer) run(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, b.script, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %v: %v\n%s", b.script, args, err, out)
	}
	return nil
}

func (b *bouncer) kill(node int32) {
	b.t.Helper()
	b.mu.Lock()
	if b.down == nil {
		b.down = map[int32]bool{}
	}
	b.down[node] = true
	b.mu.Unlock()
	if err := b.run("kill", strconv.Itoa(int(node))); err != nil {
		b.t.Fatal(err)
	}
}

func (b *bouncer) start(node int32) {
	b.t.Helper()
	if err := b.run("start", strconv.Itoa(int(node))); err != nil {
		b.t.Fatal(err)
	}
	b.mu.Lock()
	delete(b.down, node)
	b.mu.Unlock()
}

// restoreAll starts every node a failed test left down, so that the
// tests after it have the whole cluster.
func (b *bouncer) restoreAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for node := range b.down {
		if err := b.run("start", strconv.Itoa(int(node))); err != nil {
			b.t.Logf("restarting node %d after the test: %v", node, err)
		}
	}
}

// pick returns the node to kill and its role: kdedup's transaction
// coordinator, else (it was bounced already) its group coordinator, else
// the first node not bounced yet.
func (b *bouncer) pick(adm *kadm.Client, txnID, group string, done []int32) (int32, string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bounced := func(n int32) bool {
		for _, d := range done {
			if d == n {
				return true
			}
		}
		return false
	}
	for i, c := range []kadm.FindCoordinatorResponse{adm.FindTxnCoordinators(ctx, txnID)[txnID], adm.FindGroupCoordinators(ctx, group)[group]} {
		if c.Err == nil && !bounced(c.NodeID) {
			return c.NodeID, []string{"kdedup's transaction coordinator", "kdedup's group coordinator"}[i]
		} else if c.Err != nil {
			b.t.Logf("finding a coordinator of %s: %v", c.Name, c.Err)
		}
	}
	bs, err := adm.ListBrokers(ctx)
	if err != nil {
		b.t.Fatal(err)
	}
	for _, id := range bs.NodeIDs() {
		if !bounced(id) {
			return id, "neither coordinator"
		}
	}
	b.t.Fatalf("no broker left to bounce (bounced %v)", done)
	return 0, ""
}

// waitISR waits until node is registered again and every partition of
// every topic has a leader and all its replicas in sync.
func waitISR(t *testing.T, adm *kadm.Client, node int32) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	var why string
	for time.Now().Before(deadline) {
		why = isrLag(adm, node)
		if why == "" {
			return
		}
		time.Sleep(250 * time.Millisecond) // polling: the cluster gives no signal
	}
	t.Fatalf("node %d bounced: the cluster did not recover within 3m: %s", node, why)
}

// isrLag says what is still missing after node's restart, or "".
func isrLag(adm *kadm.Client, node int32) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := adm.Metadata(ctx)
	if err != nil {
		return err.Error()
	}
	registered := false
	for _, id := range m.Brokers.NodeIDs() {
		registered = registered || id == node
	}
	if !registered {
		return fmt.Sprintf("node %d not registered", node)
	}
	for _, td := range m.Topics {
		for _, p := range td.Partitions {
			if p.Err != nil || p.Leader < 0 || len(p.ISR) < len(p.Replicas) {
				return fmt.Sprintf("%s/%d: leader %d, replicas %v, isr %v, err %v", p.Topic, p.Partition, p.Leader, p.Replicas, p.ISR, p.Err)
			}
		}
	}
	return ""
}

// flow produces workload events in acknowledged batches at a steady pace
// until halted or max are sent; the first error ends it. done receives
// its end (nil or the error) once.
type flow struct {
	sent atomic.Int64
	stop chan struct{}
	once sync.Once
	done chan error
}

func startFlow(cl *kgo.Client, w *e2e.Workload, max, batch int, every time.Duration) *flow {
	f := &flow{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for int(f.sent.Load())+batch <= max {
			rs := make([]*kgo.Record, batch)
			for i := range rs {
				rs[i] = w.Next()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			err := cl.ProduceSync(ctx, rs...).FirstErr()
			cancel()
			if err != nil {
				f.done <- fmt.Errorf("after %d acknowledged records: %w", f.sent.Load(), err)
				return
			}
			f.sent.Add(int64(batch))
			select {
			case <-f.stop:
				f.done <- nil
				return
			case <-tick.C:
			}
		}
		f.done <- nil
	}()
	return f
}

// halt asks the flow to end after its batch in flight.
func (f *flow) halt() { f.once.Do(func() { close(f.stop) }) }
