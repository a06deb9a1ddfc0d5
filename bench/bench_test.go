package bench

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kdedup/kdedup/config"
	"github.com/kdedup/kdedup/dedup"
	"github.com/kdedup/kdedup/internal/e2e"
)

// testWriter sends progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// buildKdedup builds the kdedup binary into a temporary directory.
func buildKdedup(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kdedup")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/kdedup/kdedup/cmd/kdedup").CombinedOutput()
	if err != nil {
		t.Fatalf("building kdedup: %v\n%s", err, out)
	}
	return bin
}

// TestRun runs a short benchmark end to end on the embedded broker: both
// pipes as child processes of the built binary, and checks the report's
// invariants. Run itself fails unless each pipe wrote exactly one result
// per input record.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds kdedup and runs both pipes")
	}
	o := Options{
		// Enough events that even the raw pipe's CPU time spans several
		// of /proc's 10ms ticks.
		Events:          20_000,
		Rounds:          1,
		LatencyDuration: 500 * time.Millisecond,
		Binary:          buildKdedup(t),
		Dir:             t.TempDir(),
		Out:             testWriter{t},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Embedded || len(rep.Brokers) == 0 || rep.Events != o.Events || rep.Partitions != DefaultPartitions || rep.CommitInterval != DefaultCommitInterval {
		t.Errorf("report settings: %+v", rep)
	}
	if len(rep.Rounds) != 1 {
		t.Fatalf("%d rounds, want 1", len(rep.Rounds))
	}
	rd := rep.Rounds[0]
	for name, f := range map[string]Figures{"raw": rd.Raw, "kdedup": rd.Kdedup} {
		if f.Events != o.Events {
			t.Errorf("%s: %d events, want %d", name, f.Events, o.Events)
		}
		if f.Rate() <= 0 || f.PerCPU() <= 0 || f.CPU <= 0 || f.PeakRSS <= 0 {
			t.Errorf("%s: rate %v, per CPU %v, CPU %v, peak RSS %d: want all positive", name, f.Rate(), f.PerCPU(), f.CPU, f.PeakRSS)
		}
		if f.LatencyEvents < 1 || f.LatencyRate <= 0 {
			t.Errorf("%s: latency phase of %d events at %v/s", name, f.LatencyEvents, f.LatencyRate)
		}
		if f.P50 <= 0 || f.P50 > f.P99 {
			t.Errorf("%s: p50 %v, p99 %v: want 0 < p50 <= p99", name, f.P50, f.P99)
		}
	}
	m := rep.Medians()
	if want := rd.Kdedup.Rate() / rd.Raw.Rate(); !near(m.Ratio, want) || !near(rd.Ratio(), want) {
		t.Errorf("ratio %v (round %v), want kdedup/raw = %v", m.Ratio, rd.Ratio(), want)
	}
	if want := rd.Kdedup.PerCPU() / rd.Raw.PerCPU(); !near(m.CPURatio, want) || !near(rd.CPURatio(), want) {
		t.Errorf("CPU ratio %v (round %v), want kdedup/raw = %v", m.CPURatio, rd.CPURatio(), want)
	}
	var out bytes.Buffer
	if err := rep.Print(&out); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
	for _, want := range []string{"kdedup bench: 20,000 events", "embedded broker", "1       raw", "1       kdedup", "ratio"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	// Each child's log is in Dir, and the kdedup configuration with it.
	for _, f := range []string{"round1-raw.log", "round1-kdedup.log", "round1-kdedup.yaml"} {
		if _, err := os.Stat(filepath.Join(o.Dir, f)); err != nil {
			t.Error(err)
		}
	}
}

// TestRunRefusesBadOptions: Run validates before it starts anything.
func TestRunRefusesBadOptions(t *testing.T) {
	_, err := Run(context.Background(), Options{Events: -1, Binary: "/nonexistent"})
	if err == nil || !strings.Contains(err.Error(), "events -1") {
		t.Fatalf("Run with Events -1: %v", err)
	}
	_, err = Run(context.Background(), Options{Binary: filepath.Join(t.TempDir(), "missing")})
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Run with a missing binary: %v, want a not-exist error", err)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		o    Options
		want []string // every one must be in the error; none: valid
	}{
		{"defaults", Options{}, nil},
		{"brokers", Options{Brokers: []string{"127.0.0.1:9092", "[::1]:9092", "kafka.example.com:9093"}}, nil},
		{"kdedup env", Options{KdedupEnv: []string{"KDEDUP_CPUPROFILE=/tmp/x", "A="}}, nil},
		{"events", Options{Events: -5}, []string{"events -5"}},
		{"rounds", Options{Rounds: -1}, []string{"rounds -1"}},
		{"partitions", Options{Partitions: -3}, []string{"partitions -3"}},
		{"commit interval", Options{CommitInterval: -time.Second}, []string{"commit interval -1s"}},
		{"latency", Options{LatencyDuration: -time.Millisecond}, []string{"latency duration -1ms"}},
		{"broker without port", Options{Brokers: []string{"localhost"}}, []string{`broker "localhost"`}},
		{"broker without host", Options{Brokers: []string{":9092"}}, []string{`broker ":9092"`}},
		{"env without =", Options{KdedupEnv: []string{"KDEDUP_CPUPROFILE"}}, []string{`kdedup environment "KDEDUP_CPUPROFILE"`}},
		{"every problem at once", Options{Events: -1, Rounds: -1, Partitions: -1, Brokers: []string{"x"}},
			[]string{"events -1", "rounds -1", "partitions -1", `broker "x"`}},
		{"keys", Options{Keys: 10_000_000}, nil},
		{"keys and restore", Options{Keys: 1, Restore: true}, nil},
		{"negative keys", Options{Keys: -1}, []string{"keys -1: want 0 (no pre-load) or more"}},
		{"restore without keys", Options{Restore: true}, []string{"restore needs keys to restore"}},
		{"restore with negative keys", Options{Keys: -2, Restore: true}, []string{"keys -2", "restore needs keys"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.EnsureDefaults()
			err := o.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want an error naming %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(tc.want) {
				t.Errorf("%d problems reported, want %d: %v", n, len(tc.want), err)
			}
		})
	}
}

func TestEnsureDefaults(t *testing.T) {
	var o Options
	o.EnsureDefaults()
	if o.Events != 1_000_000 || o.Rounds != 3 || o.Partitions != 3 || o.CommitInterval != 100*time.Millisecond ||
		o.LatencyDuration != 5*time.Second || o.Out == nil || o.DisableChangelog || o.Seed != 0 || o.Keys != 0 || o.Restore {
		t.Fatalf("defaults: %+v", o)
	}
	o = Options{Events: 7, Rounds: 2, Partitions: 5, CommitInterval: time.Second, LatencyDuration: time.Minute}
	want := o
	o.EnsureDefaults()
	o.Out = nil
	if o.Events != want.Events || o.Rounds != want.Rounds || o.Partitions != want.Partitions ||
		o.CommitInterval != want.CommitInterval || o.LatencyDuration != want.LatencyDuration {
		t.Fatalf("EnsureDefaults changed set fields: %+v", o)
	}
}

func TestMedian(t *testing.T) {
	cases := []struct {
		name string
		in   []float64
		want float64
	}{
		{"none", nil, 0},
		{"one", []float64{3}, 3},
		{"odd, unsorted", []float64{9, 1, 5}, 5},
		{"even: mean of the middle two", []float64{4, 1, 3, 2}, 2.5},
		{"equal", []float64{2, 2, 2, 2}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]float64(nil), tc.in...)
			if got := median(in); got != tc.want {
				t.Fatalf("median(%v) = %v, want %v", tc.in, got, tc.want)
			}
			for i := range in {
				if in[i] != tc.in[i] {
					t.Fatalf("median reordered its input: %v", in)
				}
			}
		})
	}
	if got := median([]time.Duration{3 * time.Millisecond, time.Millisecond}); got != 2*time.Millisecond {
		t.Errorf("median of durations: %v, want 2ms", got)
	}
	if got := median([]int64{1 << 40, 1<<40 + 2}); got != 1<<40+1 {
		t.Errorf("median of int64s: %v", got)
	}
}

func TestPercentile(t *testing.T) {
	seq := func(n int) []time.Duration { // 1ms, 2ms, ... n ms
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = time.Duration(i+1) * time.Millisecond
		}
		return s
	}
	cases := []struct {
		name string
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{"none", nil, 50, 0},
		{"one", seq(1), 50, time.Millisecond},
		{"one, p99", seq(1), 99, time.Millisecond},
		{"p50 of 100", seq(100), 50, 50 * time.Millisecond},
		{"p99 of 100", seq(100), 99, 99 * time.Millisecond},
		{"p100 of 100", seq(100), 100, 100 * time.Millisecond},
		{"p50 of 3", seq(3), 50, 2 * time.Millisecond},
		{"p99 of 3", seq(3), 99, 3 * time.Millisecond},
		{"p99 of 1000", seq(1000), 99, 990 * time.Millisecond},
		{"p50 of 2", seq(2), 50, time.Millisecond},
		{"p99 of 101", seq(101), 99, 100 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.in, tc.p); got != tc.want {
				t.Fatalf("percentile(p%v of %d) = %v, want %v", tc.p, len(tc.in), got, tc.want)
			}
		})
	}
}

// TestMedians: medians per figure over rounds, and the ratios of the
// medians.
func TestMedians(t *testing.T) {
	fig := func(events int, elapsed, cpu, p50, p99 time.Duration, rss int64) Figures {
		return Figures{Events: events, Elapsed: elapsed, CPU: cpu, P50: p50, P99: p99, PeakRSS: rss}
	}
	rep := Report{Events: 1000, Rounds: []Round{
		{Raw: fig(1000, time.Second, time.Second, 10*time.Millisecond, 20*time.Millisecond, 100),
			Kdedup: fig(1000, 4*time.Second, 2*time.Second, 30*time.Millisecond, 90*time.Millisecond, 300)},
		{Raw: fig(1000, 2*time.Second, 500*time.Millisecond, 12*time.Millisecond, 40*time.Millisecond, 120),
			Kdedup: fig(1000, 5*time.Second, 4*time.Second, 50*time.Millisecond, 70*time.Millisecond, 200)},
		{Raw: fig(1000, 500*time.Millisecond, 250*time.Millisecond, 11*time.Millisecond, 30*time.Millisecond, 110),
			Kdedup: fig(1000, 2*time.Second, time.Second, 40*time.Millisecond, 80*time.Millisecond, 250)},
	}}
	for i := range rep.Rounds {
		rep.Rounds[i].Raw.LatencyRate = rep.Rounds[i].Raw.Rate() / 2
		rep.Rounds[i].Kdedup.LatencyRate = rep.Rounds[i].Kdedup.Rate() / 2
	}
	rep.Rounds[1].Kdedup.LatencyRate = 50 // its producer fell behind
	m := rep.Medians()
	if m.Raw.Rate != 1000 || m.Raw.PerCPU != 2000 || m.Raw.P50 != 11*time.Millisecond || m.Raw.P99 != 30*time.Millisecond || m.Raw.PeakRSS != 110 {
		t.Errorf("raw medians %+v", m.Raw)
	}
	if m.Kdedup.Rate != 250 || m.Kdedup.PerCPU != 500 || m.Kdedup.P50 != 40*time.Millisecond || m.Kdedup.P99 != 80*time.Millisecond || m.Kdedup.PeakRSS != 250 {
		t.Errorf("kdedup medians %+v", m.Kdedup)
	}
	if m.Ratio != 0.25 || m.CPURatio != 0.25 {
		t.Errorf("ratios %v, %v; want 0.25, 0.25", m.Ratio, m.CPURatio)
	}
	var out bytes.Buffer
	if err := rep.Print(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"kdedup bench: 1,000 events",
		"median  raw          1,000         2,000     11ms     30ms      0 MiB",
		"ratio 0.25 (events/s), 0.25 (events per CPU-s)",
		"round 2 kdedup: latency phase sent at 50 events/s, not 100",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if n := strings.Count(out.String(), "could not keep up"); n != 1 {
		t.Errorf("%d notes of a producer falling behind, want 1:\n%s", n, out.String())
	}
	if (Report{}).Medians() != (Medians{}) {
		t.Errorf("no rounds: medians %+v, want zeros", Report{}.Medians())
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567", 99999.5: "100,000", -1234: "-1,234"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestParseProc(t *testing.T) {
	// A command name with spaces and parentheses: fields count from the
	// last ')'. utime 250 and stime 50 ticks: 3s.
	stat := []byte("4242 (kd (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 100 1000000 2000 18446744073709551615\n")
	if cpu, err := parseStatCPU(stat); err != nil || cpu != 3*time.Second {
		t.Errorf("parseStatCPU: %v, %v; want 3s", cpu, err)
	}
	if _, err := parseStatCPU([]byte("4242 (kd) S 1 2")); err == nil {
		t.Error("parseStatCPU accepted a short line")
	}
	status := []byte("Name:\tkdedup\nVmPeak:\t  900 kB\nVmHWM:\t   2048 kB\nVmRSS:\t  1024 kB\n")
	if hwm, err := parseStatusHWM(status); err != nil || hwm != 2<<20 {
		t.Errorf("parseStatusHWM: %v, %v; want 2 MiB", hwm, err)
	}
	if _, err := parseStatusHWM([]byte("Name:\tkdedup\n")); err == nil {
		t.Error("parseStatusHWM accepted a status without VmHWM")
	}
	// This process's own: the fields exist where /proc does.
	if _, err := os.Stat("/proc/self/stat"); err == nil {
		cpu, hwm, err := procSnapshot(os.Getpid())
		if err != nil || cpu < 0 || hwm <= 0 {
			t.Errorf("procSnapshot(self): %v, %d, %v", cpu, hwm, err)
		}
	}
}

// TestKdedupConfig: the configuration the bench writes loads and
// compiles as kdedup's own would, with the bench's commit interval and
// names; `changelog: false` only when the changelog is disabled.
func TestKdedupConfig(t *testing.T) {
	tp := e2e.NewTopics("kdedup-bench-x.r1-kdedup.")
	tp.Group = tp.Prefix + "kdedup"
	cfgText, err := kdedupConfig(tp, kdedupSettings{brokers: []string{"127.0.0.1:9092", "[::1]:9093"}, stateDir: filepath.Join(t.TempDir(), "state"),
		changelogTopic: tp.Prefix + "changelog", commitInterval: 250 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(cfgText, "changelog: false") {
		t.Errorf("changelog disabled although it is on:\n%s", cfgText)
	}
	path := filepath.Join(t.TempDir(), "kdedup.yaml")
	if err := os.WriteFile(path, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(config.LoadOptions{File: path})
	if err != nil {
		t.Fatalf("%v\n%s", err, cfgText)
	}
	if len(cfg.Brokers) != 2 || cfg.Brokers[1] != "[::1]:9093" || cfg.Group != tp.Group || cfg.AuditTopic != tp.Audit ||
		cfg.ChangelogTopic != tp.Prefix+"changelog" || time.Duration(cfg.CommitInterval) != 250*time.Millisecond || cfg.LogLevel != "warn" {
		t.Errorf("loaded configuration differs: %+v", cfg)
	}
	if len(cfg.Streams) != 2 || cfg.Streams[0].Input != tp.PushInput || cfg.Streams[1].Output != tp.OrderOutput {
		t.Fatalf("streams: %+v", cfg.Streams)
	}
	for i, s := range cfg.Streams {
		if _, err := dedup.Compile(s); err != nil {
			t.Errorf("streams[%d]: %v", i, err)
		}
	}
	if cfg.Streams[0].TTL != config.Duration(e2e.PushTTL) || cfg.Streams[1].TTL != config.Duration(e2e.OrderTTL) {
		t.Errorf("ttls %v, %v: want the streams' own", cfg.Streams[0].TTL, cfg.Streams[1].TTL)
	}
	off, err := kdedupConfig(tp, kdedupSettings{brokers: []string{"127.0.0.1:9092"}, stateDir: "state", changelogTopic: tp.Prefix + "changelog",
		commitInterval: time.Second, disableChangelog: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(off, "\nchangelog: false\n") {
		t.Errorf("no changelog: false line:\n%s", off)
	}

	// With keys pre-loaded: every stream's ttl replaced, log level as
	// asked.
	ttl := keysTTL(20_000, 20_000)
	scaled, err := kdedupConfig(tp, kdedupSettings{brokers: []string{"127.0.0.1:9092"}, stateDir: "state", commitInterval: time.Second, ttl: ttl, logLevel: "info"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(scaled), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err = config.Load(config.LoadOptions{File: path})
	if err != nil {
		t.Fatalf("%v\n%s", err, scaled)
	}
	if cfg.LogLevel != "info" || len(cfg.Streams) != 2 || cfg.Streams[0].TTL != config.Duration(ttl) || cfg.Streams[1].TTL != config.Duration(ttl) {
		t.Errorf("log level %s, streams %+v: want info and ttl %v", cfg.LogLevel, cfg.Streams, ttl)
	}
	for i, s := range cfg.Streams {
		if _, err := dedup.Compile(s); err != nil {
			t.Errorf("streams[%d] with ttl %v: %v", i, ttl, err)
		}
	}
	if _, err := withTTL("streams:\n  - name: x\n", time.Hour, 2); err == nil {
		t.Error("withTTL accepted a streams section without ttl lines")
	}
}

func TestRawPipeRefusesBadOptions(t *testing.T) {
	err := RawPipe(context.Background(), PipeOptions{CommitInterval: -1})
	for _, want := range []string{"no group", "no input topics", "no output topic", "negative commit interval"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("RawPipe with no options: %v; want it to name %q", err, want)
		}
	}
}

func TestChildEnv(t *testing.T) {
	got := childEnv([]string{"PATH=/bin", "KDEDUP_BROKERS=x:1", "HOME=/root", "KDEDUP_STREAMS_0_TTL=1h"}, []string{"KDEDUP_CPUPROFILE=/tmp/p"})
	want := "PATH=/bin HOME=/root KDEDUP_CPUPROFILE=/tmp/p"
	if strings.Join(got, " ") != want {
		t.Fatalf("childEnv: %v, want %s", got, want)
	}
}

// TestPrintWithoutCPU: a CPU time below /proc's resolution shows as "-"
// with a note, never as 0 events per CPU-second.
func TestPrintWithoutCPU(t *testing.T) {
	f := Figures{Events: 100, Elapsed: time.Second, P50: time.Millisecond, P99: time.Millisecond}
	var out bytes.Buffer
	if err := (Report{Events: 100, Rounds: []Round{{Raw: f, Kdedup: f}}}).Print(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"1       raw            100             -", "below /proc's resolution"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}
