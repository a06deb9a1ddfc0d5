package e2e_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestUnknownOutcomes injects, while a workload flows, broker answers whose
// outcome is unknown: REQUEST_TIMED_OUT on EndTxn, TxnOffsetCommit and
// Produce, which kfake (like a real broker) answers after applying the
// work. kdedup must neither guess the outcome nor exit: the result is still
// exactly once.
func TestUnknownOutcomes(t *testing.T) {
	e := fakeSetup(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	in := start(t, e.config(t, "faulty", ""))

	const n = 20_000
	done := make(chan struct{})
	go func() {
		defer close(done)
		produce(context.Background(), t, producerClient(t, e), e.tp.NewWorkload(seed, n), n)
	}()
	keys := []kmsg.Key{kmsg.EndTxn, kmsg.TxnOffsetCommit, kmsg.Produce}
	injected := map[kmsg.Key]int{}
	for i := 0; i < 12; i++ {
		time.Sleep(time.Duration(100+rng.IntN(300)) * time.Millisecond) // spacing the injections
		k := keys[rng.IntN(len(keys))]
		f := kfake.Fault{Keys: []kmsg.Key{k}, Err: kerr.RequestTimedOut, Count: 1}
		if k == kmsg.Produce {
			f.Topic = e.tp.PushOutput // kdedup's writes, not the workload's
		}
		e.fake.Fault(f)
		injected[k]++
	}
	<-done
	rep := e.verify(t, n)
	if !rep.OK() {
		t.Fatalf("seed %d: %v\nkdedup's goroutines and log: %s", seed, rep, in.dump())
	}
	select {
	case err := <-in.done:
		t.Fatalf("kdedup exited under faults: %v\n%s", err, in.logs)
	default:
	}
	in.stop(t)
	rebuilds.Lock()
	rebuilt := rebuilds.n
	rebuilds.Unlock()
	t.Logf("unknown outcomes injected %v (EndTxn=26, TxnOffsetCommit=28, Produce=0); sessions rebuilt %d: %v", injected, rebuilt, rep)
	if !rep.OK() {
		t.Fatalf("seed %d: %v\n%s", seed, rep, in.logs)
	}
}

// TestEndFailsThenFences: EndTxn answers REQUEST_TIMED_OUT until the fault
// is lifted, so End itself fails and the outcome is unknown. kdedup must
// rebuild its session and fence the open transaction at once (not wait out
// the 30s transaction timeout: the group cannot hand out offsets while that
// transaction's offset commit is pending), then finish exactly once.
func TestEndFailsThenFences(t *testing.T) {
	e := fakeSetup(t)
	in := start(t, e.config(t, "fenced", ""))
	w := e.tp.NewWorkload(21, 5_000)
	pcl := producerClient(t, e)
	produce(context.Background(), t, pcl, w, 2_000)

	rebuilds.Lock()
	before := rebuilds.n
	rebuilds.Unlock()
	fault := e.fake.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.EndTxn}, Err: kerr.RequestTimedOut, Count: -1})
	produce(context.Background(), t, pcl, w, 2_000)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		rebuilds.Lock()
		n := rebuilds.n
		rebuilds.Unlock()
		if n > before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("End never failed under a persistent EndTxn fault\n%s", in.logs)
		}
		time.Sleep(50 * time.Millisecond) // polling the log counter
	}
	fault.Remove()
	lifted := time.Now()
	produce(context.Background(), t, pcl, w, 1_000)
	rep := e.verify(t, 5_000)
	took := time.Since(lifted)
	if !rep.OK() {
		t.Fatalf("%v\nkdedup's goroutines and log: %s", rep, in.dump())
	}
	in.stop(t)
	t.Logf("End failed, session rebuilt, fault lifted: every result visible %v later: %v", took.Round(time.Millisecond), rep)
	if took > 20*time.Second {
		t.Fatalf("results took %v after the fault was lifted: the open transaction was not fenced at once", took)
	}
}
