package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestProfiled: KDEDUP_CPUPROFILE and KDEDUP_MEMPROFILE write profiles
// around the command, which does not see them in its environment; a
// profile file that cannot be created is a usage error and the command
// does not run.
func TestProfiled(t *testing.T) {
	dir := t.TempDir()
	cpu, mem := filepath.Join(dir, "cpu.pprof"), filepath.Join(dir, "mem.pprof")
	env := []string{"KDEDUP_CPUPROFILE=" + cpu, "KDEDUP_MEMPROFILE=" + mem, "KDEDUP_GROUP=g"}
	var seen []string
	code := profiled(env, &bytes.Buffer{}, func(env []string) int {
		seen = env
		return 3
	})
	if code != 3 {
		t.Fatalf("exit %d, want the command's 3", code)
	}
	if strings.Join(seen, " ") != "KDEDUP_GROUP=g" {
		t.Errorf("the command saw %v, want only KDEDUP_GROUP=g", seen)
	}
	for _, f := range []string{cpu, mem} {
		st, err := os.Stat(f)
		if err != nil {
			t.Errorf("profile: %v", err)
		} else if st.Size() == 0 {
			t.Errorf("profile %s is empty", f)
		}
	}

	var errb bytes.Buffer
	ran := false
	code = profiled([]string{"KDEDUP_CPUPROFILE=" + filepath.Join(dir, "missing", "cpu.pprof")}, &errb, func([]string) int {
		ran = true
		return 0
	})
	if code != 2 || ran || !strings.Contains(errb.String(), "KDEDUP_CPUPROFILE") {
		t.Errorf("unwritable profile: exit %d, command ran %v, stderr %q; want 2, not run, the variable named", code, ran, errb.String())
	}
}
