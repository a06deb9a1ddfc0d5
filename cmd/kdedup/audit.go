package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/term"

	"github.com/kdedup/kdedup/audit"
	"github.com/kdedup/kdedup/config"
	"github.com/kdedup/kdedup/connect"
	"github.com/kdedup/kdedup/embedded"
)

// auditCmd runs kdedup audit tail|stats|show (docs/audit.md).
func auditCmd(args, env []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "kdedup audit: want tail, stats or show\n\n"+usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "tail":
		return auditTail(ctx, args[1:], env, stdout, stderr)
	case "stats":
		return auditStats(ctx, args[1:], env, stdout, stderr)
	case "show":
		return auditShow(ctx, args[1:], env, stdout, stderr)
	}
	fmt.Fprintf(stderr, "kdedup audit: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// rangeFlags are the flags that choose where tail and stats start.
type rangeFlags struct {
	since         string
	fromBeginning bool
}

func (f *rangeFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&f.since, "since", "", "start at records from this long ago (90m, 1h, 7d) or from this RFC 3339 time (default: the last hour)")
	fs.BoolVar(&f.fromBeginning, "from-beginning", false, "start at the oldest record the topic holds")
}

// start returns where the range starts: the zero time for the beginning.
func (f *rangeFlags) start(now time.Time) (time.Time, error) {
	switch {
	case f.fromBeginning && f.since != "":
		return time.Time{}, errors.New("--since and --from-beginning exclude each other")
	case f.fromBeginning:
		return time.Time{}, nil
	case f.since == "":
		return now.Add(-audit.DefaultSince), nil
	}
	t, err := audit.ParseSince(f.since, now)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since: %w", err)
	}
	return t, nil
}

// filterFlags are the record filters of tail and stats.
type filterFlags struct {
	stream, reason, key string
}

func (f *filterFlags) bind(fs *flag.FlagSet, withKey bool) {
	fs.StringVar(&f.stream, "stream", "", "only records of this stream (dedup.stream; default: all)")
	fs.StringVar(&f.reason, "reason", "", "only records of this reason (dedup.reason; default: all)")
	if withKey {
		fs.StringVar(&f.key, "key", "", "only records of this idempotency key (dedup.key; default: all)")
	}
}

func (f *filterFlags) filter(cfg *config.Config) (audit.Filter, error) {
	names := make([]string, len(cfg.Streams))
	for i, s := range cfg.Streams {
		names[i] = s.Name
	}
	return audit.NewFilter(names, f.stream, f.reason, f.key)
}

// source returns the audit.Source of cfg's brokers: with none configured,
// the embedded broker of a running kdedup on 127.0.0.1.
func source(cfg *config.Config) (*audit.Source, error) {
	brokers := cfg.Brokers
	if len(brokers) == 0 {
		brokers = []string{"127.0.0.1:" + strconv.Itoa(embedded.DefaultPort)}
	}
	secure, err := connect.Options(cfg.SASL, cfg.TLS)
	if err != nil {
		return nil, err
	}
	return &audit.Source{Opts: append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, secure...)}, nil
}

// outputFlag checks -o against the formats allowed.
func outputFlag(o string, formats ...string) error {
	for _, f := range formats {
		if o == f {
			return nil
		}
	}
	return fmt.Errorf("-o %q: want %s", o, joinOr(formats))
}

func joinOr(s []string) string {
	out := ""
	for i, v := range s {
		switch {
		case i == 0:
		case i == len(s)-1:
			out += " or "
		default:
			out += ", "
		}
		out += v
	}
	return out
}

// terminalWidth is w's width when it is a terminal, else 0.
func terminalWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		if c, _, err := term.GetSize(int(f.Fd())); err == nil {
			return c
		}
	}
	return 0
}

// readFailed reports a failed read of the audit topic: exit 1. A read
// ended by SIGINT or SIGTERM is not a failure when following.
func readFailed(name string, cfg *config.Config, err error, follow bool, stderr io.Writer) int {
	if errors.Is(err, context.Canceled) {
		if follow {
			return 0
		}
		fmt.Fprintf(stderr, "kdedup %s: interrupted\n", name)
		return 1
	}
	fmt.Fprintf(stderr, "kdedup %s: audit topic %s: %v\n", name, cfg.AuditTopic, err)
	if len(cfg.Brokers) == 0 {
		fmt.Fprintf(stderr, "  (no brokers configured: the embedded broker of a running kdedup on 127.0.0.1:%d was asked)\n", embedded.DefaultPort)
	}
	return 1
}

// auditTail runs kdedup audit tail.
func auditTail(ctx context.Context, args, env []string, stdout, stderr io.Writer) int {
	var rf rangeFlags
	var ff filterFlags
	var follow bool
	var output string
	cfg, ok := loadConfigWith("audit tail", args, env, stderr, func(fs *flag.FlagSet) {
		rf.bind(fs)
		ff.bind(fs, true)
		fs.BoolVar(&follow, "follow", false, "keep printing new records until interrupted (default: stop at the end as of the start)")
		fs.StringVar(&output, "o", "table", "output format: table or json (one object a line)")
	})
	if !ok {
		return 2
	}
	since, err := rf.start(time.Now())
	if err == nil {
		err = outputFlag(output, "table", "json")
	}
	filter, ferr := ff.filter(cfg)
	if err == nil {
		err = ferr
	}
	if err != nil {
		fmt.Fprintf(stderr, "kdedup audit tail: %v\n", err)
		return 2
	}
	src, err := source(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "kdedup audit tail: %v\n", err)
		return 2
	}
	var write func(*kgo.Record) error
	if output == "json" {
		write = audit.NewEncoder(stdout).Encode
	} else {
		names := make([]string, len(cfg.Streams))
		for i, s := range cfg.Streams {
			names[i] = s.Name
		}
		write = audit.NewTable(stdout, terminalWidth(stdout), names).Write
	}
	read, shown := 0, 0
	err = src.Tail(ctx, cfg.AuditTopic, audit.Range{Since: since, Follow: follow}, func(r *kgo.Record) error {
		read++
		if !filter.Match(r) {
			return nil
		}
		shown++
		return write(r)
	})
	if err != nil {
		return readFailed("audit tail", cfg, err, follow, stderr)
	}
	if output == "table" {
		fmt.Fprintf(stderr, "%d of %d audit records shown\n", shown, read)
	}
	return 0
}

// auditStats runs kdedup audit stats.
func auditStats(ctx context.Context, args, env []string, stdout, stderr io.Writer) int {
	var rf rangeFlags
	var ff filterFlags
	var output string
	var top int
	cfg, ok := loadConfigWith("audit stats", args, env, stderr, func(fs *flag.FlagSet) {
		rf.bind(fs)
		ff.bind(fs, false)
		fs.IntVar(&top, "top", audit.DefaultTop, "how many keys to list with the most duplicates and the most conflicts")
		fs.StringVar(&output, "o", "table", "output format: table or json")
	})
	if !ok {
		return 2
	}
	since, err := rf.start(time.Now())
	if err == nil {
		err = outputFlag(output, "table", "json")
	}
	if err == nil && top < 0 {
		err = fmt.Errorf("--top %d: want 0 or more", top)
	}
	filter, ferr := ff.filter(cfg)
	if err == nil {
		err = ferr
	}
	if err != nil {
		fmt.Fprintf(stderr, "kdedup audit stats: %v\n", err)
		return 2
	}
	src, err := source(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "kdedup audit stats: %v\n", err)
		return 2
	}
	var st audit.Stats
	err = src.Tail(ctx, cfg.AuditTopic, audit.Range{Since: since}, func(r *kgo.Record) error {
		if filter.Match(r) {
			st.Add(r)
		}
		return nil
	})
	if err != nil {
		return readFailed("audit stats", cfg, err, false, stderr)
	}
	rep := st.Report(top)
	if output == "json" {
		err = writeJSON(stdout, rep)
	} else {
		err = rep.WriteTable(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "kdedup audit stats: %v\n", err)
		return 1
	}
	return 0
}

// auditShow runs kdedup audit show.
func auditShow(ctx context.Context, args, env []string, stdout, stderr io.Writer) int {
	var output string
	more := func(fs *flag.FlagSet) {
		fs.StringVar(&output, "o", "text", "output format: text or json")
	}
	flags, pos := splitArgs(args, more)
	cfg, ok := loadConfigWith("audit show", flags, env, stderr, more)
	if !ok {
		return 2
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "kdedup audit show: want one record: TOPIC/PARTITION/OFFSET (or PARTITION/OFFSET of the audit topic)")
		return 2
	}
	if err := outputFlag(output, "text", "json"); err != nil {
		fmt.Fprintf(stderr, "kdedup audit show: %v\n", err)
		return 2
	}
	c, err := audit.ParseCoordinates(pos[0], cfg.AuditTopic)
	if err != nil {
		fmt.Fprintf(stderr, "kdedup audit show: %v\n", err)
		return 2
	}
	src, err := source(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "kdedup audit show: %v\n", err)
		return 2
	}
	sh, err := src.Show(ctx, c)
	if err != nil {
		fmt.Fprintf(stderr, "kdedup audit show: %v\n", err)
		return 1
	}
	if output == "json" {
		err = sh.WriteJSON(stdout)
	} else {
		err = sh.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "kdedup audit show: %v\n", err)
		return 1
	}
	return 0
}

// writeJSON writes v as one line of JSON.
func writeJSON(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// splitArgs separates a command's arguments into its flags and its
// positional arguments, which may stand before, between or after the
// flags (the flag package stops at the first positional one). more binds
// the command's own flags; what the flags are wrong in is left for the
// real parse to report.
func splitArgs(args []string, more func(*flag.FlagSet)) (flags, pos []string) {
	rest := args
	for len(rest) > 0 {
		fs := flag.NewFlagSet("", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		config.BindFlags(fs)
		more(fs)
		if err := fs.Parse(rest); err != nil {
			return append(flags, rest...), pos
		}
		consumed := rest[:len(rest)-fs.NArg()]
		flags = append(flags, consumed...)
		if len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			return flags, append(pos, fs.Args()...)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	return flags, pos
}
