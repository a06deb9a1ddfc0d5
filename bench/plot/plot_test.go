package plot

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	gplot "gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/text"
)

// TestReadGood: each testdata/good/NAME.jsonl reads, and aggregates to
// the points of NAME.want.
func TestReadGood(t *testing.T) {
	files, _ := filepath.Glob("testdata/good/*.jsonl")
	if len(files) == 0 {
		t.Fatal("no testdata/good/*.jsonl")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			ms := readFile(t, file)
			want, err := os.ReadFile(strings.TrimSuffix(file, ".jsonl") + ".want")
			if err != nil {
				t.Fatal(err)
			}
			if got := summary(ms); got != string(want) {
				t.Errorf("points\n%s\nwant\n%s", got, want)
			}
			for _, m := range ms {
				if m.Line == 0 {
					t.Errorf("measurement without its line: %+v", m)
				}
			}
		})
	}
}

// summary is the aggregated points of ms, a line a point.
func summary(ms []Measurement) string {
	var b strings.Builder
	b.WriteString("# plot series x: median min max n\n")
	byPlot := map[string][]Measurement{}
	for _, m := range ms {
		byPlot[m.Plot] = append(byPlot[m.Plot], m)
	}
	for _, id := range Plots() {
		for _, s := range aggregate(byPlot[id], figures[id].yScale) {
			for _, p := range s.Points {
				fmt.Fprintf(&b, "%s %q %g: %g %g %g %d\n", id, s.Name, p.X, p.Median, p.Min, p.Max, p.N)
			}
		}
	}
	return b.String()
}

func readFile(t *testing.T, file string) []Measurement {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ms, err := Read(f)
	if err != nil {
		t.Fatalf("Read(%s): %v", file, err)
	}
	return ms
}

// TestReadBad: each testdata/bad/NAME.jsonl is refused with the error
// text of NAME.err.
func TestReadBad(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.jsonl")
	if len(files) == 0 {
		t.Fatal("no testdata/bad/*.jsonl")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			in, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(strings.TrimSuffix(file, ".jsonl") + ".err")
			if err != nil {
				t.Fatal(err)
			}
			ms, err := Read(bytes.NewReader(in))
			if err == nil {
				t.Fatalf("read %d measurements, want the error\n%s", len(ms), want)
			}
			if got := err.Error(); got != strings.TrimSuffix(string(want), "\n") {
				t.Errorf("error\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func TestAggregate(t *testing.T) {
	at := time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)
	m := func(series string, x, y float64) Measurement {
		return Measurement{Plot: "bytes-per-key", Series: series, X: x, Y: y, Command: "c", Machine: "m", At: at}
	}
	for _, tc := range []struct {
		name   string
		ms     []Measurement
		yScale float64
		want   []series
	}{
		{"none", nil, 1, nil},
		{"one point", []Measurement{m("a", 10, 5)}, 1, []series{{"a", []point{{10, 5, 5, 5, 1}}}}},
		{
			"odd count: the middle value",
			[]Measurement{m("a", 10, 9), m("a", 10, 1), m("a", 10, 4)}, 1,
			[]series{{"a", []point{{10, 4, 1, 9, 3}}}},
		},
		{
			"even count: the mean of the middle two",
			[]Measurement{m("a", 10, 8), m("a", 10, 1), m("a", 10, 4), m("a", 10, 100)}, 1,
			[]series{{"a", []point{{10, 6, 1, 100, 4}}}},
		},
		{
			"series by name, points by x, scaled",
			[]Measurement{m("b", 100, 3<<20), m("a", 1000, 1<<20), m("a", 10, 2<<20), m("a", 10, 6<<20), m("b", 1, 1<<20)}, 1.0 / (1 << 20),
			[]series{
				{"a", []point{{10, 4, 2, 6, 2}, {1000, 1, 1, 1, 1}}},
				{"b", []point{{1, 1, 1, 1, 1}, {100, 3, 3, 3, 1}}},
			},
		},
		{
			"equal values",
			[]Measurement{m("a", 10, 7), m("a", 10, 7)}, 1,
			[]series{{"a", []point{{10, 7, 7, 7, 2}}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := aggregate(tc.ms, tc.yScale)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("aggregate\n got %v\nwant %v", got, tc.want)
			}
		})
	}
	if got := median([]float64{math.MaxFloat64, math.MaxFloat64}); got != math.MaxFloat64 {
		t.Errorf("median of two maxima: %g", got)
	}
	// Whiskers only where the runs differ, measured from the median.
	w := spread([]point{{10, 4, 2, 6, 2}, {100, 7, 7, 7, 2}, {1000, 3, 1, 3, 3}})
	if w.Len() != 2 {
		t.Fatalf("whiskers %v", w)
	}
	for i, want := range [][4]float64{{10, 4, 2, 2}, {1000, 3, 2, 0}} {
		x, y := w.XY(i)
		lo, hi := w.YError(i)
		if got := [4]float64{x, y, lo, hi}; got != want {
			t.Errorf("whisker %d: x, median, down, up %v, want %v", i, got, want)
		}
	}
}

// TestRender: the SVGs of testdata/good/all.jsonl, one per plot with
// data, with their titles, axes, legends and captions.
func TestRender(t *testing.T) {
	ms := readFile(t, "testdata/good/all.jsonl")
	dir := filepath.Join(t.TempDir(), "out")
	paths, err := Render(ms, dir)
	if err != nil {
		t.Fatal(err)
	}
	wantPaths := []string{
		filepath.Join(dir, "restore-vs-keys.svg"),
		filepath.Join(dir, "rss-vs-keys.svg"),
		filepath.Join(dir, "throughput-vs-partitions.svg"),
	}
	if !slices.Equal(paths, wantPaths) {
		t.Fatalf("wrote %v, want %v", paths, wantPaths)
	}
	for _, tc := range []struct {
		file string
		want []string
		not  []string
	}{
		{
			"restore-vs-keys.svg",
			[]string{
				"Restore rate against changelog size", "keys in the changelog", "keys restored/s",
				"embedded broker", "Apache Kafka 4.1.1", // the legend
				">1M<", ">10M<", // log ticks
				"Each point is the median of the runs at its x; whiskers span their minimum and maximum.",
				// Wrapped between commands, not inside one.
				">Commands: kdedup bench --keys 1000000 --restore; kdedup bench --keys 1000000 --restore --brokers 127.0.0.1:19092;</text>",
				">kdedup bench --keys 10000000 --restore</text>",
				"Machines: 2-core AMD EPYC, 24 GiB; 4-core laptop, 16 GiB",
				"Measured 2026-12-02 to 2026-12-04 (UTC), 6 measurements.",
			},
			[]string{"Command: "},
		},
		{
			"rss-vs-keys.svg",
			[]string{
				"Peak memory against live keys", "live keys", "peak RSS (MiB)", "kdedup",
				"Command: kdedup bench --keys 100000", "Machine: 2-core AMD EPYC, 24 GiB",
				"Measured 2026-12-02 (UTC), 2 measurements.",
				">100k<", ">1M<",
			},
			nil,
		},
		{
			"throughput-vs-partitions.svg",
			[]string{
				"Throughput against partitions", "partitions", "events/s", "kdedup", "raw pipe",
				"Commands: kdedup bench --partitions 1; kdedup bench --partitions 16; kdedup bench --partitions 4",
				">1<", ">4<", ">16<", // a tick at each x
			},
			nil,
		},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(dir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			svg := string(b)
			if !strings.HasPrefix(svg, "<?xml") || !strings.Contains(svg, "<svg") || !strings.HasSuffix(strings.TrimSpace(svg), "</svg>") {
				t.Fatalf("not an SVG document:\n%.300s", svg)
			}
			for _, s := range tc.want {
				if !strings.HasPrefix(s, ">") {
					s = html.EscapeString(s)
				}
				if !strings.Contains(svg, s) {
					t.Errorf("no %q in %s", s, tc.file)
				}
			}
			for _, s := range tc.not {
				if strings.Contains(svg, html.EscapeString(s)) {
					t.Errorf("%q in %s", s, tc.file)
				}
			}
		})
	}
	// The same data draws the same images.
	again, err := Render(ms, filepath.Join(t.TempDir(), "again"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range paths {
		a, _ := os.ReadFile(paths[i])
		b, _ := os.ReadFile(again[i])
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs from one rendering to the next", filepath.Base(paths[i]))
		}
	}
}

// TestRenderChecks: Render refuses what Read would, naming the
// measurement; nothing to draw writes nothing.
func TestRenderChecks(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	ok := Measurement{Plot: "bytes-per-key", Series: "s", X: 1, Y: 1, Command: "c", Machine: "m"}
	bad := ok
	bad.X = 0
	if _, err := Render([]Measurement{ok, bad}, dir); err == nil || err.Error() != `measurement 1: x is 0: plot "bytes-per-key" has a log x axis, x must be positive` {
		t.Errorf("Render of x 0: %v", err)
	}
	bad.Line = 7
	if _, err := Render([]Measurement{bad}, dir); err == nil || !strings.HasPrefix(err.Error(), "line 7: ") {
		t.Errorf("Render of x 0 from line 7: %v", err)
	}
	paths, err := Render(nil, dir)
	if err != nil || len(paths) != 0 {
		t.Errorf("Render of nothing: %v, %v", paths, err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Error("Render of nothing made its directory")
	}
	// One x on a log axis: a decade around it.
	paths, err = Render([]Measurement{ok}, dir)
	if err != nil || len(paths) != 1 {
		t.Fatalf("Render of one point: %v, %v", paths, err)
	}
}

func TestLabels(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{
		{0, "0"}, {0.25, "0.25"}, {1, "1"}, {999, "999"}, {1000, "1k"}, {200000, "200k"},
		{1.5e6, "1.5M"}, {1.2000000000000002e6, "1.2M"}, {1e7, "10M"}, {3e9, "3G"},
	} {
		if got := human(tc.v); got != tc.want {
			t.Errorf("human(%g) = %q, want %q", tc.v, got, tc.want)
		}
	}
	var labels []string
	for _, tk := range (logTicks{}).Ticks(1e5, 1e7) {
		if tk.Label != "" {
			labels = append(labels, tk.Label)
		}
	}
	if want := []string{"100k", "1M", "10M"}; !slices.Equal(labels, want) {
		t.Errorf("log ticks %v, want %v", labels, want)
	}
	if n := len((logTicks{}).Ticks(1e5, 1e7)); n != 19 {
		t.Errorf("%d log ticks over two decades, want 19", n)
	}
}

// FuzzRead: Read never panics; what it accepts is valid, one measurement
// a non-blank line, and reads back the same once written out again.
func FuzzRead(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*.jsonl")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		ms, err := Read(bytes.NewReader(in))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "line ") {
				t.Fatalf("error naming no line: %v", err)
			}
			return
		}
		lines := 0
		for _, l := range bytes.Split(in, []byte("\n")) {
			if len(bytes.TrimSpace(l)) > 0 {
				lines++
			}
		}
		if len(ms) != lines {
			t.Fatalf("%d measurements from %d lines", len(ms), lines)
		}
		var out bytes.Buffer
		for _, m := range ms {
			if err := check(m); err != nil {
				t.Fatalf("accepted %+v: %v", m, err)
			}
			b, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			out.Write(append(b, '\n'))
		}
		again, err := Read(&out)
		if err != nil {
			t.Fatalf("written out again, %v:\n%s", err, out.String())
		}
		for i := range ms {
			a, b := ms[i], again[i]
			if a.Plot != b.Plot || a.Series != b.Series || a.X != b.X || a.Y != b.Y || a.Command != b.Command || a.Machine != b.Machine || !a.At.Equal(b.At) {
				t.Fatalf("read back %+v as %+v", a, b)
			}
		}
	})
}

// TestWrap: captions break between items, inside an item only when it
// is wider than a line, and never lose a word.
func TestWrap(t *testing.T) {
	sty := text.Style{Font: font.From(font.Font{Typeface: "Liberation", Variant: "Sans"}, 10), Handler: gplot.DefaultTextHandler}
	limit := sty.Width("aaaa bbbb cccc")
	for _, tc := range []struct {
		items []string
		want  []string
	}{
		{nil, nil},
		{[]string{"aaaa;", "bbbb"}, []string{"aaaa; bbbb"}},
		{[]string{"aaaa bbbb;", "cccc dddd"}, []string{"aaaa bbbb;", "cccc dddd"}},
		{[]string{"a;", "bbbb cccc dddd eeee ffff"}, []string{"a;", "bbbb cccc dddd", "eeee ffff"}},
		{[]string{"aaaaaaaaaaaaaaaaaaaaaaaaaaaa", "b"}, []string{"aaaaaaaaaaaaaaaaaaaaaaaaaaaa", "b"}},
	} {
		if got := wrap(tc.items, sty, limit); !slices.Equal(got, tc.want) {
			t.Errorf("wrap(%q) = %q, want %q", tc.items, got, tc.want)
		}
	}
}
