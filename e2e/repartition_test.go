package e2e_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/internal/e2e"
)

// TestRepartition: producers that spread each key's copies over the input
// partitions (round robin), and kdedup with the repartition step on both
// streams, SIGKILLed at random moments. Every input must be forwarded to
// its repartition topic exactly once, and then decided exactly once: copies
// that arrived in different input partitions are caught as duplicates.
func TestRepartition(t *testing.T) {
	e := setup(t, threeBrokers)
	e.tp = e.tp.Repartitioned()
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 4))
	cfg := e.config(t, "rep", "")
	const rounds, perRound = 8, 2_000
	w := e.tp.NewWorkload(seed, rounds*perRound)
	cl, err := kgo.NewClient(e.conn(kgo.ProducerLinger(5*time.Millisecond), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	in := start(t, cfg)
	kills := 0
	for round := 0; round < rounds; round++ {
		p := startProducing(context.Background(), cl, w, perRound, 0)
		time.Sleep(time.Duration(50+rng.IntN(700)) * time.Millisecond) // the random crash point
		in.kill()
		kills++
		in = start(t, cfg)
		p.wait(t)
	}
	n := rounds * perRound
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	inputs, err := e2e.ReadAll(ctx, e.conn(), n, time.Second, e.tp.Inputs()...)
	if err != nil {
		t.Fatal(err)
	}
	reps, err := e2e.ReadAll(ctx, e.conn(), n, 2*time.Second, e.tp.PushRepartition, e.tp.OrderRepartition)
	if err != nil {
		t.Logf("reading the repartition topics: %v", err)
	}
	decided, err := e2e.ReadAll(ctx, e.conn(), n, 2*time.Second, e.tp.Decided()...)
	if err != nil {
		t.Logf("reading outputs: %v", err)
	}
	in.stop(t)
	outs, audits := e.split(decided)
	rep := e.tp.CheckRepartitioned(inputs, reps, outs, audits)
	// Copies caught across input partitions: the point of the step.
	across := 0
	for _, a := range audits {
		var src, first string
		for _, h := range a.Headers {
			switch h.Key {
			case "dedup.source":
				src = string(h.Value)
			case "dedup.first":
				first = string(h.Value)
			}
		}
		if first != "" && partitionOf(src) != partitionOf(first) {
			across++
		}
	}
	t.Logf("repartition: %d SIGKILLs, %d duplicates and conflicts caught across input partitions: %v", kills, across, rep)
	if !rep.OK() {
		t.Fatalf("seed %d: %v\n%s", seed, rep, in.logs)
	}
	if across == 0 {
		t.Fatal("no copy arrived in another input partition than its first: the test proves nothing")
	}
}

// partitionOf returns the partition of topic/partition/offset coordinates.
func partitionOf(c string) string {
	parts := strings.Split(c, "/")
	if len(parts) < 3 {
		return fmt.Sprintf("invalid %q", c)
	}
	return parts[len(parts)-2]
}
