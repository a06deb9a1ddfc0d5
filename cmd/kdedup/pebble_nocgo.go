//go:build !cgo

package main

// pebbleOffHeap reports whether Pebble allocates its block cache and
// memtables outside Go's heap. Without cgo (CGO_ENABLED=0, as the
// Dockerfile builds) Pebble allocates them with make, on Go's heap, so
// memoryPlan raises Go's memory limit by their size: a limit that left
// them out would sit below the live heap and keep the garbage collector
// running without end.
const pebbleOffHeap = false
