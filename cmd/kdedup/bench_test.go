package main

import (
	"bytes"
	"strings"
	"testing"
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
