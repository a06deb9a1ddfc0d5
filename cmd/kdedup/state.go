package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/config"
	"github.com/kdedup/kdedup/connect"
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
		m, err := snapshot(cfg, dir)
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
		m, err := restoreSnapshot(cfg, dir, stdout)
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
func snapshot(cfg *config.Config, dir string) (*state.SnapshotManifest, error) {
	if _, err := os.Stat(dir); err == nil {
		return nil, fmt.Errorf("snapshot into %s: %w", dir, os.ErrExist)
	}
	store, err := state.Open(filepath.Join(cfg.StateDir, "state"), state.Options{})
	if err == nil {
		defer store.Close()
		return store.Snapshot(dir, cfg.Group, cfg.ChangelogTopic)
	}
	if cfg.AdminAddr == "" {
		return nil, fmt.Errorf("%w (is kdedup running with this state_dir? stop it, or set admin_addr so that the running instance takes the snapshot)", err)
	}
	resp, perr := http.Post("http://"+cfg.AdminAddr+"/state/snapshot", "", nil)
	if perr != nil {
		return nil, fmt.Errorf("%w; asking the running instance at admin_addr %s: %w", err, cfg.AdminAddr, perr)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the running instance at %s could not take a snapshot: %s: %s", cfg.AdminAddr, resp.Status, strings.TrimSpace(string(body)))
	}
	var a snapshotAnswer
	if err := json.Unmarshal(body, &a); err != nil || a.Manifest == nil {
		return nil, fmt.Errorf("the running instance at %s answered %q: %v", cfg.AdminAddr, body, err)
	}
	if err := state.MoveSnapshot(a.Dir, dir); err != nil {
		return nil, fmt.Errorf("moving the snapshot from %s to %s: %w", a.Dir, dir, err)
	}
	return a.Manifest, nil
}

// restoreSnapshot checks a snapshot against the configuration and the
// changelog, then copies it into the state directory.
func restoreSnapshot(cfg *config.Config, dir string, stdout io.Writer) (*state.SnapshotManifest, error) {
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
	if err := state.RestoreSnapshot(dir, filepath.Join(cfg.StateDir, "state")); err != nil {
		return nil, err
	}
	return m, nil
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
