// Command kdedup-plot draws the figures of BENCHMARKS.md from the
// measurements file: one SVG per plot that has measurements (package
// bench/plot says which plots there are and what the file holds).
//
//	go run ./cmd/kdedup-plot -in benchmarks/measurements.jsonl -out benchmarks   # make plots
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/kdedup/kdedup/bench/plot"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kdedup-plot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("in", "benchmarks/measurements.jsonl", "the measurements, one JSON object a line")
	out := fs.String("out", "benchmarks", "the directory to write <plot>.svg into")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kdedup-plot: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	f, err := os.Open(*in)
	if err != nil {
		fmt.Fprintf(stderr, "kdedup-plot: %v\n", err)
		return 1
	}
	defer f.Close()
	ms, err := plot.Read(f)
	if err != nil {
		fmt.Fprintf(stderr, "kdedup-plot: %s: %v\n", *in, err)
		return 1
	}
	paths, err := plot.Render(ms, *out)
	for _, p := range paths {
		fmt.Fprintln(stdout, p)
	}
	if err != nil {
		fmt.Fprintf(stderr, "kdedup-plot: %v\n", err)
		return 1
	}
	if len(paths) == 0 {
		fmt.Fprintf(stderr, "kdedup-plot: no measurements in %s: nothing to draw\n", *in)
	}
	return 0
}
