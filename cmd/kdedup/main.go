package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/kdedup/kdedup/config"
	"github.com/kdedup/kdedup/dedup"
)

const usage = `kdedup: Kafka stream deduplication

Usage:
  kdedup run --config FILE [flags]     run the processor (no brokers configured: an embedded
                                       broker on 127.0.0.1:9092, data under state_dir)
  kdedup demo [flags]                  run on an embedded broker with generated push and order
                                       events and print a summary (kdedup demo -h for its flags)
  kdedup check --config FILE [flags]   validate a configuration and print it with every default
  kdedup bench [flags]                 measure kdedup against a raw transactional pipe: events/s,
                                       events per CPU-second, latency, peak RSS (kdedup bench -h)
  kdedup state snapshot --config FILE --out DIR
                                       snapshot the state (Pebble checkpoint plus stamps), for
                                       backups and fast bootstrap; a running instance is asked
                                       through its admin_addr
  kdedup state restore --config FILE --from DIR
                                       put a snapshot into an empty state_dir; refused when the
                                       changelog no longer holds what followed it
  kdedup keys get --config FILE --stream S --key K [--scope V]... [--admin ADDR,...] [-o text|json]
                                       ask every instance given (default: admin_addr) whether
                                       key K is live, and which one owns it; exit 1 when none
  kdedup keys forget --config FILE --stream S --key K [--scope V]... (--if-match ETAG | --force)
                    [--admin ADDR,...] [-o text|json]
                                       forget the key, so that its next record is first_seen;
                                       exit 1 when not live (404) or the ETag is stale (412)
                                       (docs/admin-api.md)
  kdedup audit tail --config FILE [--stream S] [--reason R] [--key K]
                    [--since DURATION | --from-beginning] [--follow] [-o table|json]
                                       print audit records (read_committed, no consumer group);
                                       default: the last hour, up to the end as of the start
  kdedup audit stats --config FILE [--since DURATION | --from-beginning] [--stream S]
                    [--reason R] [--top N] [-o table|json]
                                       audit records per stream and reason, and the keys with
                                       the most duplicates and conflicts (default: last hour)
  kdedup audit show --config FILE [-o text|json] TOPIC/PARTITION/OFFSET
                                       an audit record beside the first-seen record its
                                       dedup.first header names, and how their values differ
                                       (docs/audit.md)

Flags of run and check: --config FILE, --set PATH=VALUE (repeatable), and one per
top-level field: --brokers, --group, --instance-id, --state-dir,
--audit-topic, --changelog-topic, --guarantee, --commit-interval,
--admin-addr. Every field may also come from KDEDUP_<PATH> environment
variables; flags override the environment, which overrides the file.
KDEDUP_CPUPROFILE=FILE and KDEDUP_MEMPROFILE=FILE make run write a CPU
profile of its whole life and a heap profile at its exit (go tool pprof).
`

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

// run executes one command and returns the process exit code: 0 on
// success, 1 on a failure, 2 on a usage or configuration error.
func run(args, env []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "check":
		return check(args[1:], env, stdout, stderr)
	case "run":
		return profiled(env, stderr, func(env []string) int { return runCmd(args[1:], env, stderr) })
	case "demo":
		return demoCmd(args[1:], env, stdout, stderr)
	case "bench":
		return benchCmd(args[1:], stdout, stderr)
	case "bench-pipe": // hidden: the raw pipe kdedup bench runs as a child
		return benchPipeCmd(args[1:], stderr)
	case "state":
		return stateCmd(args[1:], env, stdout, stderr)
	case "keys":
		return keysCmd(args[1:], env, stdout, stderr)
	case "audit":
		return auditCmd(args[1:], env, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "kdedup: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// The environment variables that make kdedup run write profiles.
const (
	cpuProfileEnv = "KDEDUP_CPUPROFILE"
	memProfileEnv = "KDEDUP_MEMPROFILE"
)

// profiled runs cmd, a command's body, with the profiles the environment
// asks for: KDEDUP_CPUPROFILE=FILE, a CPU profile from start until cmd
// returns; KDEDUP_MEMPROFILE=FILE, a heap profile when it returns (after
// a garbage collection, so it shows what is live). cmd gets env without
// those two, which name no configuration field. A file that cannot be
// created is a usage error (2), before cmd runs; a profile that cannot
// be written makes a successful command fail (1). A command that exits
// the process itself (kdedup run's shutdown deadline) writes neither.
func profiled(env []string, stderr io.Writer, cmd func(env []string) int) int {
	var cpuPath, memPath string
	var rest []string
	for _, kv := range env {
		switch name, v, _ := strings.Cut(kv, "="); name {
		case cpuProfileEnv:
			cpuPath = v
		case memProfileEnv:
			memPath = v
		default:
			rest = append(rest, kv)
		}
	}
	var cpuFile, memFile *os.File
	if cpuPath != "" {
		f, err := os.Create(cpuPath)
		if err != nil {
			fmt.Fprintf(stderr, "kdedup: %s: %v\n", cpuProfileEnv, err)
			return 2
		}
		cpuFile = f
	}
	if memPath != "" {
		f, err := os.Create(memPath)
		if err != nil {
			fmt.Fprintf(stderr, "kdedup: %s: %v\n", memProfileEnv, err)
			if cpuFile != nil {
				cpuFile.Close()
			}
			return 2
		}
		memFile = f
	}
	if cpuFile != nil {
		if err := pprof.StartCPUProfile(cpuFile); err != nil {
			fmt.Fprintf(stderr, "kdedup: %s: %v\n", cpuProfileEnv, err)
			cpuFile.Close()
			if memFile != nil {
				memFile.Close()
			}
			return 1
		}
	}
	code := cmd(rest)
	fail := func(name string, err error) {
		fmt.Fprintf(stderr, "kdedup: %s: %v\n", name, err)
		if code == 0 {
			code = 1
		}
	}
	if cpuFile != nil {
		pprof.StopCPUProfile()
		if err := cpuFile.Close(); err != nil {
			fail(cpuProfileEnv, err)
		}
	}
	if memFile != nil {
		runtime.GC()
		err := pprof.Lookup("heap").WriteTo(memFile, 0)
		if cerr := memFile.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			fail(memProfileEnv, err)
		}
	}
	return code
}

// loadConfig parses the configuration flags of a command and loads the
// configuration, printing what is wrong with it.
func loadConfig(name string, args, env []string, stderr io.Writer) (*config.Config, bool) {
	return loadConfigWith(name, args, env, stderr, nil)
}

// loadConfigWith is loadConfig with the command's own flags added by more.
func loadConfigWith(name string, args, env []string, stderr io.Writer, more func(*flag.FlagSet)) (*config.Config, bool) {
	fs := flag.NewFlagSet("kdedup "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	flags := config.BindFlags(fs)
	if more != nil {
		more(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kdedup %s: unexpected argument %q\n", name, fs.Arg(0))
		return nil, false
	}
	cfg, err := config.Load(flags.Options(env))
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			fmt.Fprintf(stderr, "kdedup: invalid configuration:\n  %s\n", strings.ReplaceAll(err.Error(), "\n", "\n  "))
		} else {
			fmt.Fprintf(stderr, "kdedup: %v\n", err)
		}
		return nil, false
	}
	for _, v := range cfg.Ignored {
		fmt.Fprintf(stderr, "kdedup: warning: environment variable %s names no configuration field; ignored\n", v)
	}
	return cfg, true
}

// check validates the configuration, compiles every stream's rules and
// prints the effective configuration.
func check(args, env []string, stdout, stderr io.Writer) int {
	cfg, ok := loadConfig("check", args, env, stderr)
	if !ok {
		return 2
	}
	for i, s := range cfg.Streams {
		if _, err := dedup.Compile(s); err != nil {
			fmt.Fprintf(stderr, "kdedup: streams[%d]: %v\n", i, err)
			return 2
		}
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "kdedup: printing the configuration: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "# configuration valid; every default filled in\n%s", out)
	return 0
}
