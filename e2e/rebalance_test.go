package e2e_test

import (
	"net"
	"testing"
	"time"

	"github.com/kdedup/kdedup/internal/e2e"
)

// TestRebalance: a second instance joins the group while events flow and
// the first leaves (SIGTERM) later; transactions open at each rebalance
// abort, the partitions' state moves by replay, and the result is still
// exactly once.
func TestRebalance(t *testing.T) {
	e := setup(t)
	w := e.tp.NewWorkload(11, 15_000)
	pcl := producerClient(t, e)
	a := start(t, e.config(t, "a", ""))
	mustProduce(t, pcl, w, 5_000)
	b := start(t, e.config(t, "b", ""))
	mustProduce(t, pcl, w, 5_000)
	a.stop(t)
	mustProduce(t, pcl, w, 5_000)
	rep := e.verify(t, 15_000)
	b.stop(t)
	t.Logf("rebalance: %v", rep)
	if !rep.OK() {
		t.Fatalf("%v\ninstance b log:\n%s", rep, b.logs)
	}
}

// TestEmbeddedBrokerSurvivesKill runs kdedup with no brokers configured —
// the embedded broker on 127.0.0.1:9092 inside the process — and SIGKILLs
// the whole process at random moments: broker data and state under
// the same state_dir must carry on exactly once. The kills land while
// events flow, so transactions are open in the broker when it dies.
func TestEmbeddedBrokerSurvivesKill(t *testing.T) {
	if realBrokers() != nil {
		t.Skip("tests the embedded broker: runs in make test")
	}
	if ln, err := net.Listen("tcp", "127.0.0.1:9092"); err != nil {
		t.Skipf("127.0.0.1:9092 is taken: %v", err)
	} else {
		ln.Close()
	}
	e := &env{bs: []string{"127.0.0.1:9092"}, tp: e2e.NewTopics("")}
	cfg := e.tp.Config(nil, t.TempDir(), "embedded", "")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	// The broker dies with every kill: the workload's producer retries
	// until the restarted process serves again.
	const rounds, perRound = 6, 1_500
	kills, terms, in := crashLoop(t, e, cfg, seed, rounds, perRound)
	total := rounds * perRound
	rep := e.verify(t, total)
	in.stop(t)
	t.Logf("embedded broker, %d SIGKILLs and %d SIGTERMs of the whole process: %v", kills, terms, rep)
	if !rep.OK() {
		t.Fatalf("%v\n%s", rep, in.logs)
	}
}
