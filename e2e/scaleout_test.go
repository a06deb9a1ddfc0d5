package e2e_test

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// TestScaleOut runs three instances of the kdedup binary in one group over
// push and order events while, round after round, one of them is SIGKILLed
// at a random moment and restarted. Once an instance's state directory is
// wiped before it restarts (its partitions come back to it with no local
// state: the changelog must rebuild them), and once one restarts from a
// snapshot (kdedup state snapshot/restore) taken rounds earlier of another
// instance's state, catching up from the changelog tail; a fourth instance joins
// mid-stream and one of the first three leaves for good (SIGTERM). The
// output must hold every first-seen record exactly once and the audit every
// other record, under read_committed, as in the crash test.
func TestScaleOut(t *testing.T) {
	e := setup(t, threeBrokers)
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 3))
	root := t.TempDir()
	cfg := func(name string) string {
		return e.tp.Config(e.bs, filepath.Join(root, name), name, e.security)
	}
	snapshot := filepath.Join(root, "snapshot")
	running := map[string]*instance{}
	var all []*instance // every instance started, for their log counters
	launch := func(name string) {
		running[name] = start(t, cfg(name))
		all = append(all, running[name])
	}
	for _, name := range []string{"a", "b", "c"} {
		launch(name)
	}
	names := func() []string {
		var ns []string
		for n := range running {
			ns = append(ns, n)
		}
		sort.Strings(ns)
		return ns
	}
	const rounds, perRound = 14, 2_000
	w := e.tp.NewWorkload(seed, rounds*perRound)
	pcl := producerClient(t, e)
	var kills, wipes int
	var events []string
	for round := 0; round < rounds; round++ {
		p := startProducing(context.Background(), pcl, w, perRound, 0)
		time.Sleep(time.Duration(50+rng.IntN(700)) * time.Millisecond) // the random moment of this round's fault
		ns := names()
		victim := ns[rng.IntN(len(ns))]
		switch round {
		case 4: // wipe: its partitions come back to it with no state
			running[victim].kill()
			// Keep a snapshot of what the wipe destroys, for round 12.
			snapCfg := filepath.Join(root, victim+".yaml")
			if err := os.WriteFile(snapCfg, []byte(cfg(victim)), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(binary, "state", "snapshot", "--config", snapCfg, "--out", snapshot).CombinedOutput(); err != nil {
				t.Fatalf("kdedup state snapshot: %v\n%s", err, out)
			}
			if err := os.RemoveAll(filepath.Join(root, victim)); err != nil {
				t.Fatal(err)
			}
			launch(victim)
			kills++
			wipes++
			events = append(events, "wiped "+victim)
		case 12: // bootstrap from the (older, another instance's) snapshot
			running[victim].kill()
			if err := os.RemoveAll(filepath.Join(root, victim)); err != nil {
				t.Fatal(err)
			}
			restoreCfg := filepath.Join(root, victim+"-restore.yaml")
			if err := os.WriteFile(restoreCfg, []byte(cfg(victim)), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(binary, "state", "restore", "--config", restoreCfg, "--from", snapshot)
			cmd.Env = append(os.Environ(), "KDEDUP_TEST_BROKERS=") // the suite's variables are not kdedup's
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("kdedup state restore: %v\n%s", err, out)
			}
			launch(victim)
			kills++
			wipes++
			events = append(events, "restored "+victim+" from a snapshot")
		case 7: // scale out: a fourth instance joins
			launch("d")
			events = append(events, "added d")
		case 10: // scale in: one leaves for good
			if victim == "d" {
				victim = ns[0]
			}
			running[victim].stop(t)
			delete(running, victim)
			events = append(events, "removed "+victim)
		default:
			running[victim].kill()
			launch(victim)
			kills++
			events = append(events, "killed "+victim)
		}
		p.wait(t)
	}
	rep := e.verify(t, rounds*perRound)
	for _, in := range running {
		in.stop(t)
	}
	fromChangelog := total(all, func(in *instance) *counter { return &in.changelogRestores })
	t.Logf("scale-out: %d SIGKILLs (%d with the state wiped), %v; %d partition restores from the changelog: %v", kills, wipes, events, fromChangelog, rep)
	if !rep.OK() {
		t.Fatalf("seed %d: %v", seed, rep)
	}
	if fromChangelog == 0 {
		t.Fatalf("no partition was restored from the changelog, though a state directory was wiped")
	}
}
