package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/config"
	"github.com/kdedup/kdedup/connect"
	"github.com/kdedup/kdedup/internal/progress"
	"github.com/kdedup/kdedup/state"
)

// stateCmd runs kdedup state snapshot|restore.
func stateCmd(args, env []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "kdedup state: want snapshot or restore\n\n"+usage)
		return 2
	}
	var dir string
	switch args[0] {
	case "snapshot":
		cfg, ok := loadConfigWith("state snapshot", args[1:], env, stderr, func(fs *flag.FlagSet) {
			fs.StringVar(&dir, "out", "", "directory to write the snapshot into (must not exist)")
		})
		if !ok {
			return 2
		}
		if dir == "" {
			fmt.Fprintln(stderr, "kdedup state snapshot: --out DIR is required")
			return 2
		}
		m, err := snapshot(cfg, dir, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "kdedup state snapshot: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "snapshot of %d partitions written to %s\n", len(m.Keyspaces), dir)
		for _, ks := range m.Keyspaces {
			fmt.Fprintf(stdout, "  %s/%d: input offset %d, changelog offset %d, %d keys\n", ks.Topic, ks.Partition, ks.Input, ks.Changelog, ks.Keys)
		}
		return 0
	case "restore":
		cfg, ok := loadConfigWith("state restore", args[1:], env, stderr, func(fs *flag.FlagSet) {
			fs.StringVar(&dir, "from", "", "snapshot directory (kdedup state snapshot --out)")
		})
		if !ok {
			return 2
		}
		if dir == "" {
			fmt.Fprintln(stderr, "kdedup state restore: --from DIR is required")
			return 2
		}
		m, err := restoreSnapshot(cfg, dir, stdout, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "kdedup state restore: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "restored %d partitions from %s (taken %s) into %s; start kdedup to catch up from the changelog\n",
			len(m.Keyspaces), dir, m.Created.Format(time.RFC3339), cfg.StateDir)
		return 0
	}
	fmt.Fprintf(stderr, "kdedup state: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// snapshotAnswer is the admin API's answer to POST /state/snapshot.
type snapshotAnswer struct {
	Dir      string                  `json:"dir"`
	Manifest *state.SnapshotManifest `json:"manifest"`
}

// snapshot writes a snapshot of the state into dir. A stopped instance's
// store is opened here; a running one (the store is locked) is asked
// through its admin API to take the snapshot, which is then moved to dir.
// The bytes written into dir are shown on stderr as they grow.
func snapshot(cfg *config.Config, dir string, stderr io.Writer) (*state.SnapshotManifest, error) {
	if _, err := os.Stat(dir); err == nil {
		return nil, fmt.Errorf("snapshot into %s: %w", dir, os.ErrExist)
	}
	storeDir := filepath.Join(cfg.StateDir, "state")
	store, err := state.Open(storeDir, state.Options{})
	if err == nil {
		defer store.Close()
		// The live store's size is the estimate: the checkpoint holds its
		// tables and WAL, not its obsolete files.
		w := watchCopy(stderr, "kdedup state snapshot, bytes copied", dirSize(storeDir), dir)
		m, err := store.Snapshot(dir, cfg.Group, cfg.ChangelogTopic)
		w.end(err == nil)
		return m, err
	}
	if cfg.AdminAddr == "" {
		return nil, fmt.Errorf("%w (is kdedup running with this state_dir? stop it, or set admin_addr so that the running instance takes the snapshot)", err)
	}
	cl, cerr := newAdminClient(cfg, 10*time.Minute)
	if cerr != nil {
		return nil, fmt.Errorf("%w; asking the running instance at admin_addr %s: %w", err, cfg.AdminAddr, cerr)
	}
	code, _, body, perr := cl.do(context.Background(), http.MethodPost, cfg.AdminAddr, "/state/snapshot", nil)
	if perr != nil {
		return nil, fmt.Errorf("%w; asking the running instance at admin_addr %s: %w", err, cfg.AdminAddr, perr)
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("the running instance at %s could not take a snapshot: %d %s: %s", cfg.AdminAddr, code, http.StatusText(code), strings.TrimSpace(string(body)))
	}
	var a snapshotAnswer
	if err := json.Unmarshal(body, &a); err != nil || a.Manifest == nil {
		return nil, fmt.Errorf("the running instance at %s answered %q: %v", cfg.AdminAddr, body, err)
	}
	// A rename, or across file systems a copy.
	w := watchCopy(stderr, "kdedup state snapshot, bytes moved", dirSize(a.Dir), dir)
	err = state.MoveSnapshot(a.Dir, dir)
	w.end(err == nil)
	if err != nil {
		return nil, fmt.Errorf("moving the snapshot from %s to %s: %w", a.Dir, dir, err)
	}
	return a.Manifest, nil
}

// restoreSnapshot checks a snapshot against the configuration and the
// changelog, then copies it into the state directory, showing the bytes
// copied on stderr.
func restoreSnapshot(cfg *config.Config, dir string, stdout, stderr io.Writer) (*state.SnapshotManifest, error) {
	m, err := state.ReadSnapshot(dir)
	if err != nil {
		return nil, err
	}
	if m.Group != cfg.Group || m.ChangelogTopic != cfg.ChangelogTopic {
		return nil, fmt.Errorf("%w: taken for group %q with changelog %q; this configuration has group %q and changelog %q",
			state.ErrSnapshot, m.Group, m.ChangelogTopic, cfg.Group, cfg.ChangelogTopic)
	}
	if len(cfg.Brokers) == 0 {
		fmt.Fprintln(stdout, "no brokers configured (embedded broker): the changelog is not checked")
	} else if err := checkChangelogCovers(cfg, m); err != nil {
		return nil, err
	}
	storeDir := filepath.Join(cfg.StateDir, "state")
	w := watchCopy(stderr, "kdedup state restore, bytes copied", dirSize(filepath.Join(dir, "pebble")), storeDir)
	err = state.RestoreSnapshot(dir, storeDir)
	w.end(err == nil)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// watchInterval is how often a copy's destination is measured.
const watchInterval = 100 * time.Millisecond

// copyWatch shows the progress of a copy into a directory on a
// progress.Bar by measuring the directory as it grows: the copies
// (Pebble's checkpoint, state.RestoreSnapshot, state.MoveSnapshot) report
// no progress of their own.
type copyWatch struct {
	bar  *progress.Bar
	dir  string
	base int64 // bytes in dir before the copy
	stop chan struct{}
	done chan struct{}
}

// watchCopy starts showing the bytes of a copy of about total bytes
// (<= 0: unknown) into dir on w, under label.
func watchCopy(w io.Writer, label string, total int64, dir string) *copyWatch {
	c := &copyWatch{bar: progress.New(w, label, total), dir: dir, base: dirSize(dir), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		t := time.NewTicker(watchInterval)
		defer t.Stop()
		for {
			select {
			case <-c.stop:
				return
			case <-t.C:
				c.bar.Set(dirSize(c.dir) - c.base)
			}
		}
	}()
	return c
}

// end stops the watch and ends the bar with the bytes copied. After a
// copy that succeeded they are its total: the estimate given to
// watchCopy is corrected.
func (c *copyWatch) end(ok bool) {
	close(c.stop)
	<-c.done
	n := dirSize(c.dir) - c.base
	if ok {
		c.bar.SetTotal(n)
	}
	c.bar.Set(n)
	c.bar.Done()
}

// dirSize is the size of the regular files under dir; 0 if there is none.
// Files that vanish or cannot be read while it walks are skipped.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if info, err := d.Info(); err == nil {
			n += info.Size()
		}
		return nil
	})
	return n
}

// ErrSnapshotTooOld is wrapped when the changelog no longer holds the
// records that followed a snapshot.
var ErrSnapshotTooOld = errors.New("snapshot is older than the changelog's start")

// checkChangelogCovers refuses a snapshot whose keyspaces reflect
// changelog offsets below the changelog's start: the records in between
// are gone, and the partition would miss their keys.
func checkChangelogCovers(cfg *config.Config, m *state.SnapshotManifest) error {
	secure, err := connect.Options(cfg.SASL, cfg.TLS)
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, secure...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	starts, err := kadm.NewClient(cl).ListStartOffsets(ctx, cfg.ChangelogTopic)
	if err != nil {
		return fmt.Errorf("listing the start offsets of changelog %s: %w", cfg.ChangelogTopic, err)
	}
	if err := starts.Error(); err != nil {
		return fmt.Errorf("listing the start offsets of changelog %s: %w", cfg.ChangelogTopic, err)
	}
	n := int32(len(starts[cfg.ChangelogTopic]))
	if n == 0 {
		return fmt.Errorf("changelog %s has no partitions", cfg.ChangelogTopic)
	}
	for _, ks := range m.Keyspaces {
		cp := ks.Partition % n
		start, ok := starts.Lookup(cfg.ChangelogTopic, cp)
		if !ok {
			return fmt.Errorf("changelog %s/%d: no start offset", cfg.ChangelogTopic, cp)
		}
		if start.Offset > ks.Changelog {
			return fmt.Errorf("%w: %s/%d reflects changelog %s/%d up to offset %d, but the changelog starts at %d now: the records in between are gone. Take a newer snapshot, or start without one (the partition is then rebuilt from the whole changelog)",
				ErrSnapshotTooOld, ks.Topic, ks.Partition, cfg.ChangelogTopic, cp, ks.Changelog, start.Offset)
		}
	}
	return nil
}
