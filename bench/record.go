package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// PlotPoint is one figure of one round as `kdedup bench --record FILE`
// appends it to FILE: one JSON object a line, in this field order, read
// by the plot tool.
type PlotPoint struct {
	// Plot names the plot (Plot* constants).
	Plot string `json:"plot"`
	// Series names the line of the plot: where it was measured (Series).
	Series string  `json:"series"`
	X      float64 `json:"x"`
	Y      float64 `json:"y"`
	// Command is the command line that measured it (CommandLine).
	Command string `json:"command"`
	// Machine describes the machine (Machine).
	Machine string `json:"machine"`
	// At is when the run ended, RFC 3339 in UTC.
	At string `json:"at"`
}

// The plots a run records points of.
const (
	// PlotThroughputVsKeys: x the keys pre-loaded (Options.Keys, above
	// 0), y kdedup's events/s in the timed phase.
	PlotThroughputVsKeys = "throughput-vs-keys"
	// PlotRSSVsKeys: x the keys pre-loaded, y the timed phase's peak RSS
	// of kdedup in bytes.
	PlotRSSVsKeys = "rss-vs-keys"
	// PlotRestoreVsKeys: x the keys pre-loaded, y the takeover's restore
	// keys/s (Probe.KeysPerSecond); only with Options.Restore.
	PlotRestoreVsKeys = "restore-vs-keys"
	// PlotRestartVsKeys: x the keys pre-loaded, y the seconds from the
	// timed phase's kdedup start on the pre-loaded state until its first
	// result was visible (Scale.Deciding); only with keys pre-loaded.
	PlotRestartVsKeys = "restart-vs-keys"
	// PlotThroughputVsPartitions: x Options.Partitions, y kdedup's
	// events/s in the timed phase.
	PlotThroughputVsPartitions = "throughput-vs-partitions"
)

// The series a run's points belong to unless named otherwise.
const (
	SeriesEmbedded = "embedded broker"
	SeriesKafka    = "Apache Kafka"
)

// Series is the default series of r's points: SeriesEmbedded on the
// bench's embedded broker, SeriesKafka on brokers given.
func (r Report) Series() string {
	if r.Embedded {
		return SeriesEmbedded
	}
	return SeriesKafka
}

// PlotMeta are the fields every point of a run shares.
type PlotMeta struct {
	// Series defaults to Report.Series.
	Series string
	// Command is the command line (CommandLine), Machine the machine
	// (Machine).
	Command, Machine string
	// At is when the run ended; written in UTC.
	At time.Time
}

// PlotPoints returns r's figures as plot points, one per round and
// figure (not medians), rounds in order: with Keys throughput-vs-keys,
// rss-vs-keys, restore-vs-keys (with Restore, where keys were restored)
// and restart-vs-keys, and always throughput-vs-partitions. The plot
// tool (package bench/plot) refuses an x that is not positive: without
// Keys there is no point of the plots of keys. Rates are rounded to
// whole events or keys per second, seconds to the millisecond.
func (r Report) PlotPoints(meta PlotMeta) []PlotPoint {
	series := meta.Series
	if series == "" {
		series = r.Series()
	}
	at := meta.At.UTC().Format(time.RFC3339)
	var pts []PlotPoint
	add := func(plot string, x, y float64) {
		pts = append(pts, PlotPoint{Plot: plot, Series: series, X: x, Y: y, Command: meta.Command, Machine: meta.Machine, At: at})
	}
	keys := float64(r.Keys)
	for _, rd := range r.Rounds {
		// The plots of keys count them on a log scale: a run without
		// keys pre-loaded has no point there.
		if r.Keys > 0 {
			add(PlotThroughputVsKeys, keys, math.Round(rd.Kdedup.Rate()))
			add(PlotRSSVsKeys, keys, float64(rd.Kdedup.PeakRSS))
			if kps := rd.Scale.Takeover.KeysPerSecond(); r.Restore && kps > 0 {
				add(PlotRestoreVsKeys, keys, math.Round(kps))
			}
			add(PlotRestartVsKeys, keys, math.Round(rd.Scale.Deciding.Seconds()*1000)/1000)
		}
		add(PlotThroughputVsPartitions, float64(r.Partitions), math.Round(rd.Kdedup.Rate()))
	}
	return pts
}

// WritePlotPoints writes pts to w as JSON lines: compact, one object a
// line, nothing escaped that need not be.
func WritePlotPoints(w io.Writer, pts []PlotPoint) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for _, p := range pts {
		if err := enc.Encode(p); err != nil {
			return err
		}
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// CommandLine renders a command line as typed: the program's base name
// (args[0]) and its arguments, separated by spaces; an argument that is
// empty or holds a space, a quote or another character a shell treats
// specially is single-quoted.
func CommandLine(args []string) string {
	if len(args) == 0 {
		return ""
	}
	parts := []string{filepath.Base(args[0])}
	for _, a := range args[1:] {
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}

func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n'\"\\$`!*?[]{}()<>|&;#~") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Machine describes this machine as `<n>-core <CPU model>, <memory> GiB`:
// the logical CPUs this process may use, the first model name of
// /proc/cpuinfo and MemTotal of /proc/meminfo rounded to GiB. Without
// /proc, the model is the architecture and the memory "?".
func Machine() string {
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	meminfo, _ := os.ReadFile("/proc/meminfo")
	return machine(runtime.NumCPU(), cpuinfo, meminfo)
}

// machine is Machine from its sources.
func machine(cpus int, cpuinfo, meminfo []byte) string {
	model := runtime.GOARCH
	sc := bufio.NewScanner(bytes.NewReader(cpuinfo))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" && strings.TrimSpace(v) != "" {
			model = strings.Join(strings.Fields(v), " ")
			break
		}
	}
	mem := "?"
	sc = bufio.NewScanner(bytes.NewReader(meminfo))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		if f := strings.Fields(v); len(f) == 2 && f[1] == "kB" {
			if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				mem = strconv.FormatInt(int64(math.Round(float64(kb)/(1<<20))), 10)
			}
		}
		break
	}
	return fmt.Sprintf("%d-core %s, %s GiB", cpus, model, mem)
}
