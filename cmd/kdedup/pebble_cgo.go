//go:build cgo

package main

// pebbleOffHeap reports whether Pebble allocates its block cache and
// memtables outside Go's heap. With cgo (the default where a C compiler
// is found) they are C allocations, which Go's memory limit does not
// count, so memoryPlan leaves them out of it.
const pebbleOffHeap = true
