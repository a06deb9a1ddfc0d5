package e2e_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kdedup/kdedup/internal/damage"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// corruptState is the configuration of the corrupt-state tests: small
// memtables, so that the state reaches sstables.
const corruptState = `state:
  memtable_size: 1MiB
  cache_size: 8MiB
`

// tables returns the sstables of the Pebble store in stateDir, largest
// first.
func tables(t *testing.T, stateDir string) []string {
	t.Helper()
	ts, err := damage.Tables(filepath.Join(stateDir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// damageStore damages the Pebble store in stateDir the way kind names, and
// returns what it damaged.
func damageStore(t *testing.T, stateDir, kind string) string {
	t.Helper()
	dir := filepath.Join(stateDir, "state")
	var what []string
	var err error
	switch kind {
	case "flipped", "truncated":
		ts := tables(t, stateDir)
		if len(ts) == 0 {
			t.Fatalf("no sstable in %s", dir)
		}
		what = ts[:1]
		if kind == "flipped" {
			err = damage.FlipBytes(ts[0], 64)
		} else {
			err = damage.Truncate(ts[0])
		}
	case "no-manifest":
		what, err = damage.RemoveManifests(dir)
	case "no-current":
		// Pebble's CURRENT: the marker naming the live manifest.
		what, err = damage.RemoveManifestMarker(dir)
	default:
		t.Fatalf("unknown damage %q", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(what, " ")
}

// quarantined returns the state directories kdedup moved aside in
// stateDir.
func quarantined(t *testing.T, stateDir string) []string {
	t.Helper()
	ms, err := filepath.Glob(filepath.Join(stateDir, "state.*-*"))
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// TestCorruptState: kdedup's Pebble store is damaged while kdedup is
// stopped (bytes flipped in an sstable's data block, an sstable
// truncated, the MANIFEST or the marker that names it deleted). The next
// start must detect it, neither panic nor exit nor decide from the
// damaged state: move the store aside, start afresh, restore every
// partition from the changelog, and stay exactly once.
func TestCorruptState(t *testing.T) {
	for _, kind := range []string{"flipped", "truncated", "no-manifest", "no-current"} {
		t.Run(kind, func(t *testing.T) {
			e := fakeSetup(t, threeBrokers)
			stateDir := t.TempDir()
			cfg := e.tp.Config(e.bs, stateDir, "a", corruptState)
			const first, second = 30_000, 10_000
			w := e.tp.NewWorkload(11, first+second)
			cl := producerClient(t, e)

			in := start(t, cfg)
			mustProduce(t, cl, w, first)
			e.waitCaughtUp(t, first)
			in.stop(t)

			what := damageStore(t, stateDir, kind)
			t.Logf("damaged (%s): %s", kind, what)

			in = start(t, cfg)
			mustProduce(t, cl, w, second)
			e.waitCaughtUp(t, first+second)
			rep := e.verify(t, first+second)
			if !rep.OK() {
				t.Fatalf("after the damage (%s): %v\nkdedup log:\n%s", kind, rep, in.logs)
			}
			// Still up: the store was rebuilt, not the process ended.
			in.running(t, "after the damage")
			in.stop(t)
			if q := quarantined(t, stateDir); len(q) != 1 {
				t.Fatalf("quarantined state directories %v, want one\n%s", q, in.logs)
			}
			if !strings.Contains(in.logs.String(), `"message":"state quarantined`) {
				t.Fatalf("no log line about the quarantined state\n%s", in.logs)
			}
			if in.changelogRestores.get() == 0 {
				t.Fatalf("no partition restored from the changelog\n%s", in.logs)
			}
			t.Logf("%s: %v; %d partitions restored from the changelog", kind, rep, in.changelogRestores.get())
		})
	}
}

// TestCorruptStateWhileRunning: the sstables are damaged under a running
// kdedup. A second instance joins and leaves again, so that the first
// opens its partitions' keyspaces anew and reads the damage. The read
// must not be taken for an absent key, nor panic, nor make kdedup abort
// transaction after transaction: kdedup rebuilds its store from the
// changelog without exiting, and stays exactly once.
func TestCorruptStateWhileRunning(t *testing.T) {
	e := fakeSetup(t, threeBrokers)
	stateDir := t.TempDir()
	cfg := e.tp.Config(e.bs, stateDir, "a", corruptState)
	const first, second = 30_000, 10_000
	w := e.tp.NewWorkload(12, first+2*second)
	cl := producerClient(t, e)

	in := start(t, cfg)
	mustProduce(t, cl, w, first)
	e.waitCaughtUp(t, first)
	damageAll(t, stateDir)

	other := start(t, e.tp.Config(e.bs, t.TempDir(), "b", corruptState))
	mustProduce(t, cl, w, second)
	e.waitCaughtUp(t, first+second)
	other.stop(t)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for !strings.Contains(in.logs.String(), `"message":"state quarantined`) {
		select {
		case err := <-in.done:
			t.Fatalf("kdedup exited (%v)\n%s", err, in.logs)
		case <-ctx.Done():
			t.Fatalf("no quarantine within 2m\n%s", in.logs)
		case <-time.After(100 * time.Millisecond): // polling the log: no event for a line
		}
	}
	// Decisions go on, on the rebuilt state.
	mustProduce(t, cl, w, second)
	e.waitCaughtUp(t, first+2*second)
	rep := e.verify(t, first+2*second)
	if !rep.OK() {
		t.Fatalf("%v\nkdedup log:\n%s", rep, in.logs)
	}
	in.running(t, "after the damage")
	in.stop(t)
	if q := quarantined(t, stateDir); len(q) != 1 {
		t.Fatalf("quarantined state directories %v, want one\n%s", q, in.logs)
	}
	t.Logf("damaged while running: %v; %d partitions restored from the changelog", rep, in.changelogRestores.get())
}

// damageAll writes junk into every sstable of the store in stateDir, in
// place (the files stay open in kdedup), every 64 KiB: whatever block a
// read or a compaction needs next.
func damageAll(t *testing.T, stateDir string) {
	t.Helper()
	// The state reaches Pebble at the partitions' checkpoints (every
	// 10s), and sstables as memtables fill.
	var ts []string
	for deadline := time.Now().Add(time.Minute); ; {
		ts = tables(t, stateDir)
		var size int64
		for _, p := range ts {
			if st, err := os.Stat(p); err == nil {
				size += st.Size()
			}
		}
		if size >= 256<<10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sstables of %d bytes in %s after 1m", size, stateDir)
		}
		time.Sleep(100 * time.Millisecond) // polling the directory: no event for a flush
	}
	junk := make([]byte, 4096)
	for i := range junk {
		junk[i] = byte(i*7 + 3)
	}
	for _, path := range ts {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			continue // compacted away meanwhile
		}
		st, _ := f.Stat()
		for at := int64(0); at+int64(len(junk)) < st.Size()*9/10; at += 64 << 10 {
			_, _ = f.WriteAt(junk, at)
		}
		f.Close()
	}
}

// waitGroup waits until group has committed offsets: waitCaughtUp fails
// on a group the coordinator does not know yet.
func waitGroup(t *testing.T, e *env, group string) {
	t.Helper()
	cl, err := kgo.NewClient(e.conn()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		offs, err := adm.FetchOffsets(ctx, group)
		if err == nil && offs.Error() == nil && len(offs) > 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("group %s committed nothing within 1m: %v", group, err)
		case <-time.After(50 * time.Millisecond): // polling: the broker sends no event for it
		}
	}
}

// TestForeignState: a state directory that another group's kdedup wrote
// (a volume mounted on the wrong deployment, a group renamed in the
// configuration) while this group's committed offsets equal its stamps.
// Its keys are another group's decisions: kdedup must not trust them,
// however well the offsets match, but move them aside and restore its own
// group's state from its own changelog.
func TestForeignState(t *testing.T) {
	e := fakeSetup(t, threeBrokers)
	const first, second = 10_000, 10_000
	w := e.tp.NewWorkload(13, first+second)
	cl := producerClient(t, e)
	mustProduce(t, cl, w, first)

	// This group decides the first events with a state directory of its
	// own.
	ours := t.TempDir()
	in := start(t, e.tp.Config(e.bs, ours, "a", corruptState))
	waitGroup(t, e, e.tp.Group)
	e.waitCaughtUp(t, first)
	in.stop(t)

	// Another group, other outputs and other key rules, decides the same
	// events with another state directory: the same offsets, other keys.
	other := *e.tp
	other.Group += "-other"
	other.PushOutput, other.OrderOutput, other.Audit = "other."+other.PushOutput, "other."+other.OrderOutput, "other."+other.Audit
	theirs := t.TempDir()
	otherCfg := other.Config(e.bs, theirs, "a", corruptState)
	otherCfg = strings.ReplaceAll(otherCfg, "header: Idempotency-Key", "header: Other-Key")
	otherCfg = strings.ReplaceAll(otherCfg, "header: X-Client-Token", "header: Other-Token")
	oin := start(t, otherCfg)
	waitGroup(t, e, other.Group)
	(&env{bs: e.bs, tp: &other, fake: e.fake}).waitCaughtUp(t, first)
	oin.stop(t)

	// This group now runs on the other group's state directory.
	in = start(t, e.tp.Config(e.bs, theirs, "a", corruptState))
	mustProduce(t, cl, w, second)
	e.waitCaughtUp(t, first+second)
	rep := e.verify(t, first+second)
	if !rep.OK() {
		t.Fatalf("on another group's state: %v\nkdedup log:\n%s", rep, in.logs)
	}
	in.stop(t)
	if q := quarantined(t, theirs); len(q) != 1 {
		t.Fatalf("quarantined state directories %v, want one\n%s", q, in.logs)
	}
	t.Logf("on another group's state: %v; %d partitions restored from the changelog", rep, in.changelogRestores.get())
}
