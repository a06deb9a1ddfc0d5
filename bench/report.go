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
	return m
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
	fmt.Fprintf(&b, "kdedup bench: %s events (one input record each), %d partitions, commit interval %v%s, %s, %d CPUs\n",
		thousands(float64(r.Events)), r.Partitions, r.CommitInterval, changelog, where, r.CPUs)
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
	if marked {
		fmt.Fprintln(&b, "*: no /proc: CPU and peak RSS over the whole process life, latency phase included")
	}
	_, err := io.WriteString(w, b.String())
	return err
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
