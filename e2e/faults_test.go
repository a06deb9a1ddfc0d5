package e2e_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kdedup/kdedup/internal/e2e"
)

// TestUnknownOutcomes injects, while a workload flows, broker answers whose
// outcome is unknown: REQUEST_TIMED_OUT on EndTxn, TxnOffsetCommit and
// Produce, which kfake (like a real broker) answers after applying the
// work. kdedup must neither guess the outcome nor exit: the result is still
// exactly once.
func TestUnknownOutcomes(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(e2e.Partitions, e2e.PushInput, e2e.OrderInput))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bs := c.ListenAddrs()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	in := start(t, e2e.Config(bs, t.TempDir(), "faulty", ""))

	const n = 20_000
	done := make(chan struct{})
	go func() {
		defer close(done)
		produce(context.Background(), t, producerClient(t, bs), e2e.NewWorkload(seed, time.Now().Add(-6*time.Hour)), n)
	}()
	keys := []kmsg.Key{kmsg.EndTxn, kmsg.TxnOffsetCommit, kmsg.Produce}
	injected := map[kmsg.Key]int{}
	for i := 0; i < 12; i++ {
		time.Sleep(time.Duration(100+rng.IntN(300)) * time.Millisecond) // spacing the injections
		k := keys[rng.IntN(len(keys))]
		f := kfake.Fault{Keys: []kmsg.Key{k}, Err: kerr.RequestTimedOut, Count: 1}
		if k == kmsg.Produce {
			f.Topic = e2e.PushOutput // kdedup's writes, not the workload's
		}
		c.Fault(f)
		injected[k]++
	}
	<-done
	rep := verify(t, bs, n)
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
