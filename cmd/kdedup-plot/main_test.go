package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if code := run([]string{"-in", "../../bench/plot/testdata/good/all.jsonl", "-out", dir}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	want := strings.Join([]string{
		filepath.Join(dir, "restore-vs-keys.svg"),
		filepath.Join(dir, "rss-vs-keys.svg"),
		filepath.Join(dir, "throughput-vs-partitions.svg"),
	}, "\n") + "\n"
	if out.String() != want {
		t.Errorf("stdout %q, want %q", out.String(), want)
	}
	for _, f := range strings.Fields(want) {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}

	out.Reset()
	errb.Reset()
	bad := "../../bench/plot/testdata/bad/missing-field.jsonl"
	if code := run([]string{"-in", bad, "-out", dir}, &out, &errb); code != 1 ||
		errb.String() != "kdedup-plot: "+bad+": line 1: missing field \"machine\"\n" {
		t.Errorf("bad input: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"-in", filepath.Join(dir, "none.jsonl")}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "no such file") {
		t.Errorf("missing input: exit %d, stderr %q", code, errb.String())
	}
}
