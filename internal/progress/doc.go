// Package progress reports the progress of long work (copying a
// snapshot, restoring state) to a person watching a terminal or reading a
// log afterwards.
//
// A Bar writing to a terminal redraws one line in place, at most ten
// times a second:
//
//	label [=============>                ]  42% 4,200,000/10,000,000  1.2M/s  ETA 5s
//
// Anywhere else (a file, a pipe, CI) it writes a plain line at most every
// five seconds, and one at the end:
//
//	label: 4200000/10000000 (42%), 1234567/s
//	label: 10000000/10000000 (100%) in 8.1s, 1234567/s
//
// With an unknown total (total <= 0) it shows the count and the rate
// only. The rate is the average since New. Done ends the bar with a line
// stating the total time and rate; call it once the work ends, whether
// it succeeded or not (it is idempotent, and updates after it are
// ignored).
package progress
