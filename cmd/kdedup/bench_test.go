package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kdedup/kdedup/bench"
)

// TestBenchFlags: bad flags of kdedup bench and bench-pipe exit 2 before
// anything starts, naming the problem; -h exits 0 with the usage.
func TestBenchFlags(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"help", []string{"bench", "-h"}, 0, "Usage: kdedup bench"},
		{"unknown flag", []string{"bench", "--frobnicate"}, 2, "flag provided but not defined: -frobnicate"},
		{"not a number", []string{"bench", "--events", "many"}, 2, `invalid value "many" for flag -events`},
		{"zero events", []string{"bench", "--events", "0"}, 2, "events 0: want at least 1"},
		{"zero rounds", []string{"bench", "--rounds", "0"}, 2, "rounds 0: want at least 1"},
		{"negative partitions", []string{"bench", "--partitions", "-1"}, 2, "partitions -1"},
		{"bad duration", []string{"bench", "--latency", "soon"}, 2, `invalid value "soon" for flag -latency`},
		{"zero commit interval", []string{"bench", "--commit-interval", "0s"}, 2, "commit interval 0s"},
		{"broker without port", []string{"bench", "--brokers", "localhost"}, 2, `broker "localhost": want host:port`},
		{"every problem", []string{"bench", "--events", "0", "--rounds", "-2"}, 2, "rounds -2"},
		{"stray argument", []string{"bench", "extra"}, 2, `unexpected argument "extra"`},
		{"changelog not a bool", []string{"bench", "--changelog=maybe"}, 2, "invalid boolean value"},
		{"negative keys", []string{"bench", "--keys", "-1"}, 2, "keys -1: want 0 (no pre-load) or more"},
		{"keys not a number", []string{"bench", "--keys", "1M"}, 2, `invalid value "1M" for flag -keys`},
		{"restore without keys", []string{"bench", "--restore"}, 2, "restore needs keys to restore"},
		{"series without record", []string{"bench", "--series", "Kafka 4"}, 2, "--series names the points of --record"},
		{"record into a missing directory", []string{"bench", "--record", "/nonexistent/dir/points.jsonl"}, 2, "--record: open /nonexistent/dir/points.jsonl"},
		{"help names the new flags", []string{"bench", "-h"}, 0, "-restore"},
		{"pipe without flags", []string{"bench-pipe"}, 2, "--brokers is required; --inputs is required; --group is required; --output is required"},
		{"pipe bad interval", []string{"bench-pipe", "--brokers", "a:1", "--inputs", "i", "--group", "g", "--output", "o", "--commit-interval", "-1s"}, 2, "--commit-interval -1s"},
		{"pipe unknown flag", []string{"bench-pipe", "--nope"}, 2, "flag provided but not defined: -nope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, nil, &out, &errb)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tc.code, errb.String())
			}
			if got := out.String() + errb.String(); !strings.Contains(got, tc.contains) {
				t.Fatalf("output lacks %q:\n%s", tc.contains, got)
			}
		})
	}
	var errb bytes.Buffer
	run([]string{"bench", "--events", "0", "--rounds", "-2"}, nil, &bytes.Buffer{}, &errb)
	if !strings.Contains(errb.String(), "events 0") {
		t.Errorf("every problem is not reported:\n%s", errb.String())
	}
}

// TestRecordPoints: --record appends, one JSON line per round and figure,
// with the command line as typed (the program's base name).
func TestRecordPoints(t *testing.T) {
	path := filepath.Join(t.TempDir(), "points.jsonl")
	rep := bench.Report{Partitions: 3, Embedded: true, Keys: 5, Rounds: []bench.Round{{Kdedup: bench.Figures{Events: 10, Elapsed: time.Second, PeakRSS: 1 << 20}}}}
	for i := 0; i < 2; i++ {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if err := recordPoints(f, rep, "", []string{"/opt/bin/kdedup", "bench", "--keys", "5"}); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 8 { // throughput, rss, restart vs keys, throughput vs partitions; twice
		t.Fatalf("%d lines, want 8:\n%s", len(lines), data)
	}
	if !strings.HasPrefix(lines[0], `{"plot":"throughput-vs-keys","series":"embedded broker","x":5,"y":10,"command":"kdedup bench --keys 5","machine":"`) ||
		!strings.Contains(lines[0], ` GiB","at":"`) || !strings.HasSuffix(lines[0], `Z"}`) {
		t.Errorf("lines:\n%s", data)
	}
	// The second run's lines follow the first's, the same but for when.
	if at := strings.Index(lines[0], `"at"`); at < 0 || !strings.HasPrefix(lines[4], lines[0][:at]) {
		t.Errorf("second run's first line %s, want it to start as %s", lines[4], lines[0])
	}
}
