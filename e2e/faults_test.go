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
// outcome is unknown to kdedup: REQUEST_TIMED_OUT on EndTxn (kfake answers
// it without applying the end), TxnOffsetCommit and Produce (both applied,
// as a real broker may have done). kdedup must neither guess the outcome
// nor exit: the result is still exactly once.
//
// The workload is produced at a steady rate over the whole injection
// window, and each one-shot fault is injected once a share of it is sent
// and must answer a request of kdedup's before the next is injected: every
// fault lands while kdedup works, and each request type is hit.
func TestUnknownOutcomes(t *testing.T) {
	e := fakeSetup(t, threeBrokers)
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 2))
	const name = "faulty"
	txnID := e.tp.Group + "-" + name
	in := start(t, e.config(t, name, ""))

	const n, rate = 12_000, 1_000 // 12s of events
	p := startProducing(context.Background(), producerClient(t, e), e.tp.NewWorkload(seed, n), n, rate)
	var plan []kmsg.Key
	for i := 0; i < 4; i++ {
		plan = append(plan, kmsg.EndTxn, kmsg.TxnOffsetCommit, kmsg.Produce)
	}
	rng.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
	hits := map[kmsg.Key]int{}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for i, k := range plan {
		if err := p.sent.wait(ctx, (i+1)*n/(len(plan)+1)); err != nil {
			t.Fatalf("producing: %v", err)
		}
		f := kfake.Fault{Keys: []kmsg.Key{k}, Err: kerr.RequestTimedOut, Count: 1, TxnID: txnID}
		if k == kmsg.Produce {
			f.TxnID, f.Topic = "", e.tp.PushOutput // kdedup's writes, not the workload's
		}
		h := e.fake.Fault(f)
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		err := h.Wait(wctx, 1)
		wcancel()
		if err != nil {
			h.Remove()
			t.Fatalf("seed %d: fault %d (%v) answered no request of kdedup's within 30s (%d events sent)\n%s", seed, i, k, p.sent.get(), in.logs)
		}
		hits[k] += h.Hits()
	}
	p.wait(t)
	rep := e.verify(t, n)
	if !rep.OK() {
		t.Fatalf("seed %d: %v\nkdedup's goroutines and log: %s", seed, rep, in.dump())
	}
	in.running(t, "under faults")
	in.stop(t)
	t.Logf("unknown outcomes: faults answered EndTxn=%d TxnOffsetCommit=%d Produce=%d; sessions rebuilt %d: %v",
		hits[kmsg.EndTxn], hits[kmsg.TxnOffsetCommit], hits[kmsg.Produce], in.rebuilds.get(), rep)
	for _, k := range []kmsg.Key{kmsg.EndTxn, kmsg.TxnOffsetCommit, kmsg.Produce} {
		if hits[k] == 0 {
			t.Errorf("no %v request of kdedup's was answered REQUEST_TIMED_OUT", k)
		}
	}
}

// TestEndFailsThenFences: EndTxn answers REQUEST_TIMED_OUT until the fault
// is lifted, so End itself fails and the outcome is unknown. kdedup must
// rebuild its session and fence the open transaction at once (not wait out
// the 30s transaction timeout: the group cannot hand out offsets while that
// transaction's offset commit is pending), then finish exactly once.
func TestEndFailsThenFences(t *testing.T) {
	e := fakeSetup(t, threeBrokers)
	in := start(t, e.config(t, "fenced", ""))
	w := e.tp.NewWorkload(21, 5_000)
	pcl := producerClient(t, e)
	mustProduce(t, pcl, w, 2_000)

	before := in.rebuilds.get()
	fault := e.fake.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.EndTxn}, Err: kerr.RequestTimedOut, Count: -1})
	mustProduce(t, pcl, w, 2_000)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := in.rebuilds.wait(ctx, before+1); err != nil {
		t.Fatalf("End never failed under a persistent EndTxn fault (%d answered)\n%s", fault.Hits(), in.logs)
	}
	fault.Remove()
	lifted := time.Now()
	mustProduce(t, pcl, w, 1_000)
	rep := e.verify(t, 5_000)
	took := time.Since(lifted)
	if !rep.OK() {
		t.Fatalf("%v\nkdedup's goroutines and log: %s", rep, in.dump())
	}
	in.stop(t)
	t.Logf("End failed %d times, session rebuilt, fault lifted: every result visible %v later: %v", fault.Hits(), took.Round(time.Millisecond), rep)
	if took > 20*time.Second {
		t.Fatalf("results took %v after the fault was lifted: the open transaction was not fenced at once", took)
	}
}
