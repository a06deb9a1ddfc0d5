package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Figures are what one pipe did in one round.
type Figures struct {
	// Events is the number of events (input records) of the throughput
	// phase.
	Events int
	// Elapsed is the throughput phase: from the child's start until
	// every result was visible under read_committed.
	Elapsed time.Duration
	// CPU is the child's user + system time at the end of the throughput
	// phase (/proc/<pid>/stat), or at its exit where WholeLife is set.
	CPU time.Duration
	// PeakRSS is the child's peak resident set size in bytes at the end
	// of the throughput phase (VmHWM of /proc/<pid>/status), or at its
	// exit where WholeLife is set.
	PeakRSS int64
	// WholeLife reports that /proc was not readable (not Linux): CPU and
	// PeakRSS are the child's rusage at exit, its latency phase
	// included.
	WholeLife bool
	// LatencyEvents is the number of events of the latency phase: half
	// the throughput phase's events/s for Options.LatencyDuration.
	LatencyEvents int
	// LatencyRate is the rate they were handed to the producer at, per
	// second: half the throughput phase's events/s, or less where the
	// bench's producer could not keep up.
	LatencyRate float64
	// P50 and P99 are the latency phase's percentiles: input append →
	// result visible under read_committed.
	P50, P99 time.Duration
}

// Rate is the throughput phase's events per second; 0 when nothing was
// timed.
func (f Figures) Rate() float64 {
	if f.Elapsed <= 0 {
		return 0
	}
	return float64(f.Events) / f.Elapsed.Seconds()
}

// PerCPU is the events per CPU-second of the child; 0 when no CPU time
// was measured.
func (f Figures) PerCPU() float64 {
	if f.CPU <= 0 {
		return 0
	}
	return float64(f.Events) / f.CPU.Seconds()
}

// Round is one round: the raw pipe, then kdedup.
type Round struct {
	Raw, Kdedup Figures
	// Scale is kdedup's state at scale: zero without Options.Keys.
	Scale Scale
}

// Scale is what a round measured of kdedup with Options.Keys live keys
// pre-loaded into its state.
type Scale struct {
	// Produced is how long producing the pre-load's events took
	// (handed over until every one was acknowledged).
	Produced time.Duration
	// Preload is the pre-load's kdedup child: its Events are Keys, its
	// Elapsed from its start (on an empty state) until every result was
	// visible under read_committed, CPU and PeakRSS at that moment. It
	// has no latency phase.
	Preload Figures
	// Deciding is the timed phase's restart to deciding: from the start
	// of its kdedup child, on the state the pre-load left, until the
	// first result of the timed phase was visible.
	Deciding time.Duration
	// Restores are the restores the timed phase's child logged: none
	// where its state_dir was up to date.
	Restores []Restored
	// Takeover is the child started on a deleted state_dir, Restart the
	// one started on the state kept after it (Options.Restore; zero
	// without).
	Takeover, Restart Probe
}

// Probe is a kdedup child started on the group after the pre-load and
// measured by one probe event on every partition of every input,
// produced right after its start.
type Probe struct {
	// Elapsed is from the child's start until every probe's result was
	// visible under read_committed: takeover or restart to deciding.
	Elapsed time.Duration
	// CPU and PeakRSS are the child's at that moment, or at its exit
	// where WholeLife is set (no /proc).
	CPU       time.Duration
	PeakRSS   int64
	WholeLife bool
	// Restores are the partitions' restores the child logged ("state
	// restored"), in its order.
	Restores []Restored
}

// Restored is one partition's restore, as kdedup logs it.
type Restored struct {
	Topic     string
	Partition int32
	// From is where the state came from: "changelog" or "input".
	From    string
	Records int64
	// Keys are the partition's live keys once restored.
	Keys int64
	// Took is the restore's time, from its start to its last record.
	Took time.Duration
}

// Keys is the keys restored in all partitions.
func (p Probe) Keys() int64 {
	var n int64
	for _, r := range p.Restores {
		n += r.Keys
	}
	return n
}

// Longest is the longest partition restore's time; 0 without restores.
func (p Probe) Longest() time.Duration {
	var d time.Duration
	for _, r := range p.Restores {
		d = max(d, r.Took)
	}
	return d
}

// RestoreTime is the partition restores' times summed: kdedup restores
// one partition after another.
func (p Probe) RestoreTime() time.Duration {
	var d time.Duration
	for _, r := range p.Restores {
		d += r.Took
	}
	return d
}

// KeysPerSecond is the restore's rate: Keys over RestoreTime, since
// kdedup restores one partition after another; 0 without a restore.
func (p Probe) KeysPerSecond() float64 {
	if p.RestoreTime() <= 0 {
		return 0
	}
	return float64(p.Keys()) / p.RestoreTime().Seconds()
}

// Ratio is kdedup's events/s over the raw pipe's in this round; 0 when
// the raw pipe's is 0.
func (r Round) Ratio() float64 { return ratio(r.Kdedup.Rate(), r.Raw.Rate()) }

// CPURatio is kdedup's events per CPU-second over the raw pipe's in this
// round; 0 when the raw pipe's is 0.
func (r Round) CPURatio() float64 { return ratio(r.Kdedup.PerCPU(), r.Raw.PerCPU()) }

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// Report is a benchmark's result.
type Report struct {
	// Events, Partitions, CommitInterval, LatencyDuration and
	// DisableChangelog are the options the rounds ran with.
	Events           int
	Partitions       int
	CommitInterval   time.Duration
	LatencyDuration  time.Duration
	DisableChangelog bool
	// Brokers are the seed brokers measured on; Embedded is set when they
	// are the bench's own embedded broker.
	Brokers  []string
	Embedded bool
	// CPUs is the number of logical CPUs of this machine.
	CPUs int
	// Keys and Restore are Options.Keys and Options.Restore; TTL is every
	// stream's ttl with Keys (0 without: the streams' own).
	Keys    int
	Restore bool
	TTL     time.Duration
	// Rounds are in the order they ran.
	Rounds []Round
}

// Summary is one pipe's figures reduced over rounds.
type Summary struct {
	Rate, PerCPU float64
	P50, P99     time.Duration
	PeakRSS      int64
}

// Medians are each figure's median over the rounds, per pipe.
type Medians struct {
	Raw, Kdedup Summary
	// Ratio is Kdedup.Rate / Raw.Rate, CPURatio Kdedup.PerCPU /
	// Raw.PerCPU: ratios of the medians (0 where the raw pipe's is 0).
	Ratio, CPURatio float64
	// Scale are the state at scale's (zero without Keys).
	Scale ScaleSummary
}

// ScaleSummary is the state at scale's figures reduced over rounds.
type ScaleSummary struct {
	// Preload is the pre-load child's.
	Preload Summary
	// Deciding is the timed phase's restart to deciding.
	Deciding time.Duration
	// Takeover and Restart are the probed children's.
	Takeover, Restart ProbeSummary
}

// ProbeSummary is a probed child's figures reduced over rounds.
type ProbeSummary struct {
	Elapsed      time.Duration
	PeakRSS      int64
	Keys         int64
	KeysPerSec   float64
	Longest      time.Duration
	RestoreTime  time.Duration
	Restorations int // partitions restored
}

// Medians returns the median of every figure over the rounds (the mean
// of the middle two for an even count; zero without rounds).
func (r Report) Medians() Medians {
	pipe := func(get func(Round) Figures) Summary {
		var rates, perCPU []float64
		var p50, p99 []time.Duration
		var rss []int64
		for _, rd := range r.Rounds {
			f := get(rd)
			rates = append(rates, f.Rate())
			perCPU = append(perCPU, f.PerCPU())
			p50 = append(p50, f.P50)
			p99 = append(p99, f.P99)
			rss = append(rss, f.PeakRSS)
		}
		return Summary{Rate: median(rates), PerCPU: median(perCPU), P50: median(p50), P99: median(p99), PeakRSS: median(rss)}
	}
	m := Medians{
		Raw:    pipe(func(rd Round) Figures { return rd.Raw }),
		Kdedup: pipe(func(rd Round) Figures { return rd.Kdedup }),
	}
	m.Ratio = ratio(m.Kdedup.Rate, m.Raw.Rate)
	m.CPURatio = ratio(m.Kdedup.PerCPU, m.Raw.PerCPU)
	if r.Keys > 0 {
		m.Scale.Preload = pipe(func(rd Round) Figures { return rd.Scale.Preload })
		var deciding []time.Duration
		for _, rd := range r.Rounds {
			deciding = append(deciding, rd.Scale.Deciding)
		}
		m.Scale.Deciding = median(deciding)
	}
	if r.Restore {
		m.Scale.Takeover = r.probeMedians(func(s Scale) Probe { return s.Takeover })
		m.Scale.Restart = r.probeMedians(func(s Scale) Probe { return s.Restart })
	}
	return m
}

// probeMedians reduces the probed child get returns of every round.
func (r Report) probeMedians(get func(Scale) Probe) ProbeSummary {
	var elapsed, longest, total []time.Duration
	var rss, keys []int64
	var rates []float64
	var parts []int
	for _, rd := range r.Rounds {
		p := get(rd.Scale)
		elapsed = append(elapsed, p.Elapsed)
		rss = append(rss, p.PeakRSS)
		keys = append(keys, p.Keys())
		rates = append(rates, p.KeysPerSecond())
		longest = append(longest, p.Longest())
		total = append(total, p.RestoreTime())
		parts = append(parts, len(p.Restores))
	}
	return ProbeSummary{Elapsed: median(elapsed), PeakRSS: median(rss), Keys: median(keys), KeysPerSec: median(rates),
		Longest: median(longest), RestoreTime: median(total), Restorations: median(parts)}
}

// number is what median takes.
type number interface {
	~int | ~int64 | ~float64
}

// median returns the median of xs (the mean of the middle two for an
// even count), 0 for none. xs is not changed.
func median[T number](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return s[n/2-1] + (s[n/2]-s[n/2-1])/2
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted: the smallest value with at least p% of the values at or below
// it; 0 for none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	// ceil(p × n / 100): p × n is exact for any realistic n, and the
	// division rounds correctly, so 99% of 100 values is exactly the
	// 99th.
	n := len(sorted)
	rank := min(max(int(math.Ceil(p*float64(n)/100)), 1), n)
	return sorted[rank-1]
}

// Print writes the report as a table: a header line with the settings,
// one row per pipe and round, and the medians with kdedup's ratios to the
// raw pipe.
func (r Report) Print(w io.Writer) error {
	where := "embedded broker"
	if !r.Embedded {
		where = "brokers " + strings.Join(r.Brokers, ",")
	}
	changelog := ""
	if r.DisableChangelog {
		changelog = ", changelog off"
	}
	var b strings.Builder
	keys := ""
	if r.Keys > 0 {
		keys = fmt.Sprintf(", %s live keys pre-loaded", thousands(float64(r.Keys)))
	}
	fmt.Fprintf(&b, "kdedup bench: %s events (one input record each), %d partitions, commit interval %v%s, %s, %d CPUs%s\n",
		thousands(float64(r.Events)), r.Partitions, r.CommitInterval, changelog, where, r.CPUs, keys)
	const rowFormat = "%-7s %-7s %10s %13s %8s %8s %10s\n"
	fmt.Fprintf(&b, rowFormat, "round", "pipe", "events/s", "events/CPU-s", "p50", "p99", "peak RSS")
	marked := false
	row := func(round, pipe string, rate, perCPU float64, p50, p99 time.Duration, rss int64, wholeLife bool) {
		mark := ""
		if wholeLife {
			mark, marked = "*", true
		}
		cpu := "-" // no CPU time measured: below /proc's 10ms resolution
		if perCPU > 0 {
			cpu = thousands(perCPU)
		}
		fmt.Fprintf(&b, rowFormat, round, pipe, thousands(rate), cpu+mark, millis(p50), millis(p99), mebibytes(rss)+mark)
	}
	for i, rd := range r.Rounds {
		n := strconv.Itoa(i + 1)
		row(n, "raw", rd.Raw.Rate(), rd.Raw.PerCPU(), rd.Raw.P50, rd.Raw.P99, rd.Raw.PeakRSS, rd.Raw.WholeLife)
		row(n, "kdedup", rd.Kdedup.Rate(), rd.Kdedup.PerCPU(), rd.Kdedup.P50, rd.Kdedup.P99, rd.Kdedup.PeakRSS, rd.Kdedup.WholeLife)
	}
	m := r.Medians()
	if len(r.Rounds) > 1 {
		row("median", "raw", m.Raw.Rate, m.Raw.PerCPU, m.Raw.P50, m.Raw.P99, m.Raw.PeakRSS, false)
		row("median", "kdedup", m.Kdedup.Rate, m.Kdedup.PerCPU, m.Kdedup.P50, m.Kdedup.P99, m.Kdedup.PeakRSS, false)
	}
	fmt.Fprintf(&b, "median raw %s events/s, %s events/CPU-s / kdedup %s events/s, %s events/CPU-s / ratio %.2f (events/s), %.2f (events per CPU-s)\n",
		thousands(m.Raw.Rate), thousands(m.Raw.PerCPU), thousands(m.Kdedup.Rate), thousands(m.Kdedup.PerCPU), m.Ratio, m.CPURatio)
	fmt.Fprintf(&b, "events/s: from the pipe's start until every result is visible under read_committed; events/CPU-s: the pipe process's own CPU\n")
	fmt.Fprintf(&b, "p50/p99: input append -> result visible under read_committed, at half the pipe's rate for %v\n", r.LatencyDuration)
	for i, rd := range r.Rounds {
		for _, p := range []struct {
			name string
			f    Figures
		}{{"raw", rd.Raw}, {"kdedup", rd.Kdedup}} {
			if want := p.f.Rate() / 2; p.f.LatencyRate > 0 && p.f.LatencyRate < 0.95*want {
				fmt.Fprintf(&b, "round %d %s: latency phase sent at %s events/s, not %s: the bench's producer could not keep up\n",
					i+1, p.name, thousands(p.f.LatencyRate), thousands(want))
			}
		}
	}
	if m.Raw.PerCPU == 0 || m.Kdedup.PerCPU == 0 {
		fmt.Fprintln(&b, "events/CPU-s -, ratio 0: the CPU time was below /proc's resolution of 10ms; run more events")
	}
	if r.Keys > 0 {
		marked = r.printScale(&b, m) || marked
	}
	if marked {
		fmt.Fprintln(&b, "*: no /proc: CPU and peak RSS over the whole process life, latency phase included")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// printScale writes the state at scale's table: per round a row for each
// kdedup child (the pre-load, the takeover, the restart, the timed
// phase), their medians, and what the figures mean. It reports whether
// a figure is marked as taken at exit.
func (r Report) printScale(b *strings.Builder, m Medians) (marked bool) {
	fmt.Fprintf(b, "\nstate at scale: %s live keys pre-loaded before kdedup's timed phase; every stream's ttl %s, so that no key expires during a round\n",
		thousands(float64(r.Keys)), hours(r.TTL))
	const rowFormat = "%-7s %-12s %10s %13s %12s %14s %15s %10s\n"
	fmt.Fprintf(b, rowFormat, "round", "kdedup", "events/s", "events/CPU-s", "to deciding", "keys restored", "restore keys/s", "peak RSS")
	dash := func(ok bool, s string) string {
		if !ok {
			return "-"
		}
		return s
	}
	mark := func(whole bool) string {
		if whole {
			marked = true
			return "*"
		}
		return ""
	}
	rate := func(round, child string, rate, perCPU float64, deciding time.Duration, restored int64, rss int64, whole bool) {
		fmt.Fprintf(b, rowFormat, round, child, thousands(rate), dash(perCPU > 0, thousands(perCPU))+mark(whole),
			dash(deciding > 0, seconds(deciding)), dash(restored > 0, thousands(float64(restored))), "-", mebibytes(rss)+mark(whole))
	}
	probe := func(round, child string, elapsed time.Duration, restorations int, keys int64, keysPerSec float64, rss int64, whole bool) {
		fmt.Fprintf(b, rowFormat, round, child, "-", "-", seconds(elapsed),
			dash(restorations > 0, thousands(float64(keys))), dash(keysPerSec > 0, thousands(keysPerSec)), mebibytes(rss)+mark(whole))
	}
	for i, rd := range r.Rounds {
		n := strconv.Itoa(i + 1)
		sc := rd.Scale
		rate(n, "pre-load", sc.Preload.Rate(), sc.Preload.PerCPU(), 0, 0, sc.Preload.PeakRSS, sc.Preload.WholeLife)
		if r.Restore {
			probe(n, "takeover", sc.Takeover.Elapsed, len(sc.Takeover.Restores), sc.Takeover.Keys(), sc.Takeover.KeysPerSecond(), sc.Takeover.PeakRSS, sc.Takeover.WholeLife)
			probe(n, "restart", sc.Restart.Elapsed, len(sc.Restart.Restores), sc.Restart.Keys(), sc.Restart.KeysPerSecond(), sc.Restart.PeakRSS, sc.Restart.WholeLife)
		}
		rate(n, "timed phase", rd.Kdedup.Rate(), rd.Kdedup.PerCPU(), sc.Deciding, Probe{Restores: sc.Restores}.Keys(), rd.Kdedup.PeakRSS, rd.Kdedup.WholeLife)
	}
	ms := m.Scale
	if len(r.Rounds) > 1 {
		rate("median", "pre-load", ms.Preload.Rate, ms.Preload.PerCPU, 0, 0, ms.Preload.PeakRSS, false)
		if r.Restore {
			probe("median", "takeover", ms.Takeover.Elapsed, ms.Takeover.Restorations, ms.Takeover.Keys, ms.Takeover.KeysPerSec, ms.Takeover.PeakRSS, false)
			probe("median", "restart", ms.Restart.Elapsed, ms.Restart.Restorations, ms.Restart.Keys, ms.Restart.KeysPerSec, ms.Restart.PeakRSS, false)
		}
		rate("median", "timed phase", m.Kdedup.Rate, m.Kdedup.PerCPU, ms.Deciding, 0, m.Kdedup.PeakRSS, false)
	}
	fmt.Fprintf(b, "median pre-load %s events/s, peak RSS %s / restart to deciding %s / timed phase %s events/s, peak RSS %s\n",
		thousands(ms.Preload.Rate), mebibytes(ms.Preload.PeakRSS), seconds(ms.Deciding), thousands(m.Kdedup.Rate), mebibytes(m.Kdedup.PeakRSS))
	if r.Restore {
		t := ms.Takeover
		fmt.Fprintf(b, "median takeover to deciding %s: %s keys restored in %d partitions at %s keys/s (longest partition %s, all %s) / restart to deciding %s (probes)\n",
			seconds(t.Elapsed), thousands(float64(t.Keys)), t.Restorations, thousands(t.KeysPerSec), seconds(t.Longest), seconds(t.RestoreTime), seconds(ms.Restart.Elapsed))
	}
	fmt.Fprintf(b, "pre-load: %s events with as many distinct keys, decided by a kdedup child of their own on an empty state, stopped with SIGTERM; events/s: from its start until every result is visible\n",
		thousands(float64(r.Keys)))
	fmt.Fprintln(b, "to deciding: from the child's start until a result is visible: of the first event (timed phase: restarted on the state kept)")
	if r.Restore {
		from := "the changelog"
		if r.DisableChangelog {
			from = "the input, replayed (changelog off)"
		}
		fmt.Fprintf(b, "  or of a probe on every input partition (takeover: state_dir deleted, state restored from %s; restart: state_dir kept)\n", from)
		fmt.Fprintln(b, `restore keys/s: keys restored (kdedup's "state restored" lines) over the partitions' restore times summed: they restore one after another`)
	}
	var keptRestores, keptRecords int64
	for _, rd := range r.Rounds {
		for _, x := range append(slices.Clone(rd.Scale.Restores), rd.Scale.Restart.Restores...) {
			keptRestores++
			keptRecords += x.Records
		}
	}
	if keptRestores > 0 {
		fmt.Fprintf(b, "on the state kept, kdedup restored %d partitions all the same, from %s records in all (their last changes had not reached its state_dir): their keys restored are the partitions' live keys after it\n",
			keptRestores, thousands(float64(keptRecords)))
	}
	return marked
}

// hours renders a duration of whole hours as "25h", any other as Go does.
func hours(d time.Duration) string {
	if d > 0 && d%time.Hour == 0 {
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	}
	return d.String()
}

// seconds renders a duration in seconds with two decimals.
func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + "s"
}

// thousands renders x rounded to an integer with commas: 1,234,567.
func thousands(x float64) string {
	s := strconv.FormatFloat(x, 'f', 0, 64)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// millis renders a latency in whole milliseconds (one decimal below 10ms).
func millis(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	if ms < 10 {
		return strconv.FormatFloat(ms, 'f', 1, 64) + "ms"
	}
	return strconv.FormatFloat(ms, 'f', 0, 64) + "ms"
}

// mebibytes renders a byte count in MiB.
func mebibytes(n int64) string {
	return strconv.FormatInt((n+1<<19)>>20, 10) + " MiB"
}
