package main

import (
	"testing"

	"github.com/kdedup/kdedup/config"
)

func TestMemoryPlan(t *testing.T) {
	for _, tc := range []struct {
		name     string
		memory   config.ByteSize
		envLimit bool
		want     memoryBudget
	}{
		// Go's limit: 90% of what the 64 MiB cache and two 16 MiB
		// memtables leave, at least 64 MiB.
		{"default", 1 << 30, false, memoryBudget{goLimit: (1<<30 - 96<<20) / 10 * 9, index: 384 << 20, restoreBuffer: 64 << 20}},
		{"GOMEMLIMIT set", 1 << 30, true, memoryBudget{index: 384 << 20, restoreBuffer: 64 << 20}},
		{"small", 128 << 20, false, memoryBudget{goLimit: 64 << 20, index: 48 << 20, restoreBuffer: 8 << 20}},
		{"large: buffers capped", 16 << 30, false, memoryBudget{goLimit: (16<<30 - 96<<20) / 10 * 9, index: 6 << 30, restoreBuffer: 64 << 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := config.StateOptions{Memory: tc.memory, CacheSize: 64 << 20, MemtableSize: 16 << 20}
			if got := memoryPlan(st, tc.envLimit); got != tc.want {
				t.Fatalf("memoryPlan(%d, env %v) = %+v, want %+v", tc.memory, tc.envLimit, got, tc.want)
			}
		})
	}
}
