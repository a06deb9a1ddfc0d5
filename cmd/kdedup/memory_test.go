package main

import (
	"testing"

	"github.com/kdedup/kdedup/config"
)

func TestMemoryPlan(t *testing.T) {
	const heap1G, heap16G = (1<<30 - 96<<20) / 10 * 9, (16<<30 - 96<<20) / 10 * 9
	for _, tc := range []struct {
		name     string
		memory   config.ByteSize
		envLimit bool
		offHeap  bool
		want     memoryBudget
	}{
		// Go's limit: 90% of what the 64 MiB cache and two 16 MiB
		// memtables leave, at least 64 MiB; the index 3/8 of the memory,
		// at most that heap less 96 MiB (a quarter of it at least); the changes held an eighth of the heap
		// at 250 bytes each; a fetch a 256th of it, 512 KiB to 50 MiB.
		{"default", 1 << 30, false, true, memoryBudget{goLimit: heap1G, index: 384 << 20, restoreBuffer: 64 << 20, pendingChanges: heap1G / 8 / 250, fetchBytes: int32(heap1G / 256)}},
		{"GOMEMLIMIT set", 1 << 30, true, true, memoryBudget{index: 384 << 20, restoreBuffer: 64 << 20, pendingChanges: heap1G / 8 / 250, fetchBytes: int32(heap1G / 256)}},
		{"small", 256 << 20, false, true, memoryBudget{goLimit: 144 << 20, index: 48 << 20, restoreBuffer: 16 << 20, pendingChanges: (144 << 20) / 8 / 250, fetchBytes: (144 << 20) / 256}},
		{"smallest", 128 << 20, false, true, memoryBudget{goLimit: 64 << 20, index: 16 << 20, restoreBuffer: 8 << 20, pendingChanges: (64 << 20) / 8 / 250, fetchBytes: 512 << 10}},
		{"large: buffers capped", 16 << 30, false, true, memoryBudget{goLimit: heap16G, index: 6 << 30, restoreBuffer: 64 << 20, pendingChanges: heap16G / 8 / 250, fetchBytes: 50 << 20}},
		// Without cgo Pebble's cache and memtables are on Go's heap: the
		// limit grows by their 96 MiB, kdedup's own shares do not.
		{"no cgo", 1 << 30, false, false, memoryBudget{goLimit: heap1G + 96<<20, index: 384 << 20, restoreBuffer: 64 << 20, pendingChanges: heap1G / 8 / 250, fetchBytes: int32(heap1G / 256)}},
		{"no cgo, GOMEMLIMIT set", 1 << 30, true, false, memoryBudget{index: 384 << 20, restoreBuffer: 64 << 20, pendingChanges: heap1G / 8 / 250, fetchBytes: int32(heap1G / 256)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := config.StateOptions{Memory: tc.memory, CacheSize: 64 << 20, MemtableSize: 16 << 20}
			if got := memoryPlan(st, tc.envLimit, tc.offHeap); got != tc.want {
				t.Fatalf("memoryPlan(%d, env %v, off-heap %v) = %+v, want %+v", tc.memory, tc.envLimit, tc.offHeap, got, tc.want)
			}
		})
	}
}
