package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		env      []string
		code     int
		contains string
	}{
		{"valid", []string{"check", "--config", "../../examples/kdedup.yaml"}, nil, 0, "changelog_topic: kdedup.changelog"},
		{"field named", []string{"check", "--config", "../../examples/kdedup.yaml"}, []string{"KDEDUP_STREAMS_0_TTL=soon"}, 2, `KDEDUP_STREAMS_0_TTL (streams[0].ttl): invalid duration "soon"`},
		{"flag overrides", []string{"check", "--config", "../../examples/kdedup.yaml", "--group", "g2"}, nil, 0, "group: g2"},
		{"missing file", []string{"check", "--config", "nope.yaml"}, nil, 2, "nope.yaml"},
		{"unknown command", []string{"frobnicate"}, nil, 2, `unknown command "frobnicate"`},
		{"no command", nil, nil, 2, "Usage"},
		{"stray argument", []string{"check", "--config", "../../examples/kdedup.yaml", "extra"}, nil, 2, `unexpected argument "extra"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, tc.env, &out, &errb)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tc.code, errb.String())
			}
			if got := out.String() + errb.String(); !strings.Contains(got, tc.contains) {
				t.Fatalf("output lacks %q:\n%s", tc.contains, got)
			}
		})
	}
}

// TestDemo runs the demo command end to end, in process: embedded broker,
// processor, generator, summary. It exits 0 only when every decision came
// out as the generator intended.
func TestDemo(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"demo", "--events", "3000", "--rate", "0", "--state-dir", t.TempDir()}, nil, &out, &errb)
	if code != 0 {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"first_seen", "malformed", "p50", "p99", "events/s"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}
