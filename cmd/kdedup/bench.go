package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/bench"
)

// benchCmd runs `kdedup bench`: the raw pipe and kdedup over the same
// workload (package bench), progress on stderr, the table on stdout.
// Exit 0 on success, 1 on a failed run, 2 on bad flags.
func benchCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kdedup bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o bench.Options
	brokers := fs.String("brokers", "", "seed brokers host:port,... (default: an embedded broker in this process)")
	fs.IntVar(&o.Events, "events", bench.DefaultEvents, "events of each pipe's throughput phase, per round")
	fs.IntVar(&o.Rounds, "rounds", bench.DefaultRounds, "rounds; the report has each and the medians")
	fs.IntVar(&o.Partitions, "partitions", bench.DefaultPartitions, "partitions of every topic the bench creates")
	fs.DurationVar(&o.CommitInterval, "commit-interval", bench.DefaultCommitInterval, "commit interval of both pipes")
	fs.DurationVar(&o.LatencyDuration, "latency", bench.DefaultLatencyDuration, "duration of each latency phase (at half the pipe's rate)")
	changelog := fs.Bool("changelog", true, "run kdedup with its changelog (--changelog=false: the configuration line changelog: false)")
	fs.Uint64Var(&o.Seed, "seed", 0, "seed of the generated workload")
	cpuProfile := fs.String("cpuprofile-kdedup", "", "write kdedup's CPU profile to `FILE` (KDEDUP_CPUPROFILE; each round overwrites it)")
	fs.StringVar(&o.KdedupBinary, "kdedup-binary", "", "run the kdedup pipe with the kdedup executable `PATH` (another build, to compare; the raw pipe stays this one's)")
	fs.StringVar(&o.Dir, "dir", "", "keep configurations, logs, state and embedded broker data in `DIR` (default: a temporary directory, removed after)")
	fs.IntVar(&o.Keys, "keys", 0, "pre-load `N` live keys into kdedup's state before its timed phase (a kdedup child of their own, untimed, then a restart on that state); every stream's ttl then spans the run (default: 0, none)")
	fs.BoolVar(&o.Restore, "restore", false, "with --keys: also time a takeover (state_dir deleted, state restored from the changelog) and a restart (state kept) until a probe on every partition is decided")
	record := fs.String("record", "", "append the results to `FILE` as JSON lines, one per round and figure, for the plot tool (default: none)")
	series := fs.String("series", "", "with --record: the series `NAME` of the points (default: \"embedded broker\", or \"Apache Kafka\" with --brokers)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: kdedup bench [flags]

Runs a raw transactional consume -> produce pipe and kdedup, one after the
other, each as a child process over the same generated workload on the
same broker, and prints per round and as medians: events/s, events per
CPU-second of the process, p50/p99 latency (input append -> visible under
read_committed) and peak RSS, and kdedup's ratios to the raw pipe.

With --keys N, kdedup's timed phase runs on a state of N live keys,
pre-loaded by a kdedup of their own; the report adds the pre-load's rate,
each kdedup child's peak RSS and the restart's time to deciding, and with
--restore a takeover's restore keys/s and time to deciding.

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kdedup bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *brokers != "" {
		o.Brokers = strings.Split(*brokers, ",")
	}
	o.DisableChangelog = !*changelog
	if *cpuProfile != "" {
		o.KdedupEnv = append(o.KdedupEnv, cpuProfileEnv+"="+*cpuProfile)
	}
	err := o.Validate()
	if *series != "" && *record == "" {
		err = errors.Join(err, errors.New("bench: --series names the points of --record: give --record FILE"))
	}
	if err != nil {
		// One line per problem, each "bench: ...".
		fmt.Fprintf(stderr, "kdedup %s\n", strings.ReplaceAll(err.Error(), "\n", "\nkdedup "))
		return 2
	}
	var recordFile *os.File
	if *record != "" {
		// Opened before the run, so that a run of hours does not end in
		// a file it cannot write.
		f, err := os.OpenFile(*record, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			fmt.Fprintf(stderr, "kdedup bench: --record: %v\n", err)
			return 2
		}
		defer f.Close()
		recordFile = f
	}
	o.Out = stderr
	o.Log = zerolog.New(stderr).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	rep, err := bench.Run(ctx, o)
	if err == nil {
		err = rep.Print(stdout)
	}
	if err == nil && recordFile != nil {
		err = recordPoints(recordFile, rep, *series, append([]string{os.Args[0], "bench"}, args...))
	}
	if err != nil {
		fmt.Fprintf(stderr, "kdedup %v\n", err) // "bench: ..."
		return 1
	}
	return 0
}

// recordPoints appends rep's plot points to f (--record): series as
// given or the report's, the command line as typed (cmdline: the program
// and its arguments), this machine, the time now.
func recordPoints(f *os.File, rep bench.Report, series string, cmdline []string) error {
	pts := rep.PlotPoints(bench.PlotMeta{Series: series, Command: bench.CommandLine(cmdline), Machine: bench.Machine(), At: time.Now()})
	if err := bench.WritePlotPoints(f, pts); err != nil {
		return fmt.Errorf("bench: --record %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bench: --record %s: %w", f.Name(), err)
	}
	return nil
}

// pipeShutdownLimit bounds bench-pipe's stop after SIGTERM, below the 30s
// the bench waits.
const pipeShutdownLimit = 25 * time.Second

// benchPipeCmd runs the hidden `kdedup bench-pipe`: the raw pipe
// (bench.RawPipe) that `kdedup bench` measures in a process of its own,
// until SIGTERM.
func benchPipeCmd(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("kdedup bench-pipe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokers := fs.String("brokers", "", "seed brokers host:port,... (required)")
	inputs := fs.String("inputs", "", "input topics, comma-separated (required)")
	var o bench.PipeOptions
	fs.StringVar(&o.Group, "group", "", "consumer group (required); transactional id GROUP-raw")
	fs.StringVar(&o.Output, "output", "", "output topic (required)")
	fs.DurationVar(&o.CommitInterval, "commit-interval", bench.DefaultCommitInterval, "how long one transaction collects records")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	var problems []string
	for _, f := range []struct{ name, value string }{{"--brokers", *brokers}, {"--inputs", *inputs}, {"--group", o.Group}, {"--output", o.Output}} {
		if f.value == "" {
			problems = append(problems, f.name+" is required")
		}
	}
	if o.CommitInterval <= 0 {
		problems = append(problems, fmt.Sprintf("--commit-interval %v: want a positive duration", o.CommitInterval))
	}
	if fs.NArg() > 0 {
		problems = append(problems, fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	if len(problems) > 0 {
		fmt.Fprintf(stderr, "kdedup bench-pipe: %s\n", strings.Join(problems, "; "))
		return 2
	}
	o.Inputs = strings.Split(*inputs, ",")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second signal ends the process at once
		// A deadline on the whole shutdown (as kdedup run's), not a wait
		// for a condition.
		time.Sleep(pipeShutdownLimit)
		fmt.Fprintln(stderr, "kdedup bench-pipe: shutdown did not finish in time; exiting")
		os.Exit(1)
	}()
	if err := bench.RawPipe(ctx, o, kgo.SeedBrokers(strings.Split(*brokers, ",")...)); err != nil {
		fmt.Fprintf(stderr, "kdedup bench-pipe: %v\n", err)
		return 1
	}
	return 0
}
