// Package plot draws the figures of BENCHMARKS.md from measurements kept
// as JSON lines.
//
// # Measurements
//
// benchmarks/measurements.jsonl holds one measurement a line, a JSON
// object with exactly these fields, all required:
//
//	{"plot":"restore-vs-keys","series":"embedded broker","x":1000000,"y":1234567,
//	 "command":"kdedup bench --keys 1000000 --restore","machine":"2-core AMD EPYC, 24 GiB",
//	 "at":"2026-12-02T07:00:00Z"}
//
// plot names the figure (below), series its line, x and y the point;
// command is what measured it, machine where, at when (RFC 3339). Blank
// lines are skipped. A measurement is added by appending a line: nothing
// is ever rewritten, and runs repeated at the same x are all kept.
//
// # Figures
//
// The figures and their axes belong to this package; a measurement only
// names one:
//
//	plot                      x                                y
//	throughput-vs-keys        live keys (log)                  events/s
//	restore-vs-keys           keys in the changelog (log)      keys restored/s
//	restart-vs-keys           local keys (log)                 seconds until deciding again
//	rss-vs-keys               live keys (log)                  peak RSS in MiB (y given in bytes)
//	bytes-per-key             live keys (log)                  bytes per key on disk
//	throughput-vs-partitions  partitions                       events/s
//
// Render writes one SVG per figure that has measurements, <plot>.svg: one
// line per series with a legend; at each x the median of the
// measurements as the point and whiskers from their minimum to their
// maximum. A caption inside the image names the distinct commands and
// machines of its data and the dates it was measured on, so that an
// image copied alone still says where it comes from.
//
// Read refuses, naming the line, a line that is not a JSON object, an
// unknown or missing field, an unknown plot, a time that is not RFC 3339,
// a negative y and an x that is not positive (every x axis counts
// something, most on a log scale).
//
// cmd/kdedup-plot runs both: make plots.
package plot
