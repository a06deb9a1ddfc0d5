package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/kdedup/kdedup/config"
	"github.com/kdedup/kdedup/demo"
)

// demoCmd runs kdedup on an embedded broker (on a free port, with its data
// in a fresh directory unless --state-dir is given), drives it with the
// demo's traffic and prints the summary. Exit 0 when every decision came
// out as the generator intended.
func demoCmd(args, env []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kdedup demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o demo.Options
	fs.IntVar(&o.Events, "events", 100_000, "events to send")
	fs.IntVar(&o.Rate, "rate", 20_000, "events per second (0: as fast as possible)")
	fs.Float64Var(&o.Retries, "retries", 0.20, "share of exact copies of recent events")
	fs.Float64Var(&o.Conflicts, "conflicts", 0.05, "share of recent keys reused with another payload")
	fs.Float64Var(&o.BadKeys, "bad-keys", 0.03, "share of over-long or non-UUID keys")
	fs.Float64Var(&o.Missing, "missing", 0.01, "share of events without a key")
	fs.Float64Var(&o.Malformed, "malformed", 0.02, "share of values that are not JSON")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of the generated traffic")
	stateDir := fs.String("state-dir", "", "keep the demo's state and broker data here (default: a temporary directory, removed after)")
	logLevel := fs.String("log-level", "warn", "log level of the processor (debug, info, warn, error)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := o.Validate(); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	dir := *stateDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "kdedup-demo")
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	cfgPath := filepath.Join(dir, "demo.yaml")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := os.WriteFile(cfgPath, []byte(demo.Config), 0o644); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	cfg, err := config.Load(config.LoadOptions{File: cfgPath, Env: env, Overrides: []config.Override{
		{Path: "state_dir", Value: dir}, {Path: "log_level", Value: *logLevel},
	}})
	if err != nil {
		fmt.Fprintf(stderr, "kdedup demo: %v\n", err)
		return 2
	}
	log := newLogger(cfg.LogLevel, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	sctx, cancelServe := context.WithCancel(ctx)
	defer cancelServe()
	started := make(chan served, 1)
	serveErr := make(chan error, 1)
	go func() {
		serveErr <- serve(sctx, cfg, log, serveOptions{port: 0, started: func(s served) { started <- s }})
	}()
	var s served
	select {
	case s = <-started:
	case err := <-serveErr:
		fmt.Fprintf(stderr, "kdedup demo: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "kdedup demo: embedded broker on %s; sending %d push and order events (%.0f%% retries, %.0f%% conflicts, %.0f%% bad keys, %.0f%% without key, %.0f%% malformed)\n",
		s.brokers[0], o.Events, 100*o.Retries, 100*o.Conflicts, 100*o.BadKeys, 100*o.Missing, 100*o.Malformed)
	res, err := demo.Run(ctx, s.brokers, o, stdout)
	cancelServe()
	if serr := <-serveErr; serr != nil {
		fmt.Fprintf(stderr, "kdedup demo: processor: %v\n", serr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "kdedup demo: %v\n", err)
		return 1
	}
	if !res.OK() {
		fmt.Fprintln(stdout, "\nsome decisions differ from what the generator intended")
		return 1
	}
	return 0
}
