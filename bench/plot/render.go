package plot

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	gplot "gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// The size of an image: the plot, and below it the caption's lines.
const (
	width          = 8 * vg.Inch
	plotHeight     = 5 * vg.Inch
	captionSize    = 9 // points
	captionMargin  = 0.15 * vg.Inch
	margin         = 0.1 * vg.Inch // around the plot
	captionLeading = 1.25          // line height / font size
	// logPad widens a log axis by a twelfth of a decade.
	logPad = 1.2
)

// Render writes <plot>.svg into dir (created if missing) for each plot
// with measurements, and returns the paths written, in the order of the
// plots' ids.
func Render(ms []Measurement, dir string) ([]string, error) {
	byPlot := map[string][]Measurement{}
	for i, m := range ms {
		if err := check(m); err != nil {
			return nil, fmt.Errorf("%s: %w", where(m, i), err)
		}
		byPlot[m.Plot] = append(byPlot[m.Plot], m)
	}
	if len(byPlot) == 0 {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var written []string
	for _, id := range Plots() {
		if byPlot[id] == nil {
			continue
		}
		svg, err := render(id, byPlot[id])
		if err != nil {
			return written, fmt.Errorf("plot %s: %w", id, err)
		}
		path := filepath.Join(dir, id+".svg")
		if err := os.WriteFile(path, svg, 0o644); err != nil {
			return written, err
		}
		written = append(written, path)
	}
	return written, nil
}

// where names a measurement in an error: its line, or its index.
func where(m Measurement, i int) string {
	if m.Line > 0 {
		return fmt.Sprintf("line %d", m.Line)
	}
	return fmt.Sprintf("measurement %d", i)
}

// render draws the SVG of plot id from its measurements.
func render(id string, ms []Measurement) ([]byte, error) {
	f := figures[id]
	p := gplot.New()
	p.Title.Text = f.title
	p.X.Label.Text = f.xLabel
	p.Y.Label.Text = f.yLabel
	p.Y.Tick.Marker = humanTicks{}
	// Liberation Sans has the metrics of Arial and Helvetica, which
	// stand in for it where it is not installed: the layout holds.
	for _, sty := range []*text.Style{&p.Title.TextStyle, &p.X.Label.TextStyle, &p.Y.Label.TextStyle,
		&p.X.Tick.Label, &p.Y.Tick.Label, &p.Legend.TextStyle} {
		sty.Font.Variant = "Sans"
	}
	p.Title.TextStyle.Font.Size = 14
	p.Title.Padding = vg.Points(8)
	// Top left, text after the icons: a viewer's stand-in font, if wider,
	// runs into the plot's free top, not into the icons. The y axis
	// leaves that top free (below).
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.XOffs = vg.Points(8)
	p.Legend.YOffs = -vg.Points(4)
	p.Add(plotter.NewGrid())

	ss := aggregate(ms, f.yScale)
	xMin, xMax, yMax := math.Inf(1), math.Inf(-1), 0.0
	var xs []float64
	for i, s := range ss {
		line, dots, err := plotter.NewLinePoints(medians(s.Points))
		if err != nil {
			return nil, err
		}
		c := plotutil.Color(i)
		line.Color = c
		dots.Color = c
		dots.Shape = plotutil.Shape(i)
		p.Add(line, dots)
		p.Legend.Add(s.Name, line, dots)
		if w := spread(s.Points); len(w) > 0 {
			bars, err := plotter.NewYErrorBars(w)
			if err != nil {
				return nil, err
			}
			bars.Color = c
			p.Add(bars)
		}
		for _, pt := range s.Points {
			xMin, xMax, yMax = math.Min(xMin, pt.X), math.Max(xMax, pt.X), math.Max(yMax, pt.Max)
			xs = append(xs, pt.X)
		}
	}
	if f.logX {
		// Whole decades (at least one, so that a labelled tick shows),
		// widened where a point would sit on the frame.
		p.X.Scale = gplot.LogScale{}
		p.X.Tick.Marker = logTicks{}
		lo := math.Pow(10, math.Floor(math.Log10(xMin)))
		hi := math.Pow(10, math.Ceil(math.Log10(xMax)))
		if hi <= lo {
			hi = lo * 10
		}
		if lo >= xMin*(1-1e-9) {
			lo /= logPad
		}
		if hi <= xMax*(1+1e-9) {
			hi *= logPad
		}
		p.X.Min, p.X.Max = lo, hi
	} else {
		p.X.Tick.Marker = valueTicks(xs)
		pad := (xMax - xMin) / 20
		if pad == 0 {
			pad = 1
		}
		p.X.Min, p.X.Max = math.Max(0, xMin-pad), xMax+pad
	}
	// Rates, times and sizes are read against zero. Room at the top for
	// the legend, an entry a line (a line is about 4% of the height).
	p.Y.Min = 0
	if yMax > 0 {
		p.Y.Max = yMax * (1.08 + 0.05*float64(len(ss)))
	}

	capStyle := text.Style{
		Color:   p.Title.TextStyle.Color,
		Font:    font.From(font.Font{Typeface: "Liberation", Variant: "Sans"}, captionSize),
		Handler: gplot.DefaultTextHandler,
		XAlign:  draw.XLeft,
		YAlign:  draw.YTop,
	}
	lines := caption(ms, capStyle, width-2*captionMargin)
	lineHeight := vg.Points(captionSize * captionLeading)
	capHeight := 2*captionMargin + vg.Length(len(lines))*lineHeight

	c := vgsvg.New(width, plotHeight+capHeight)
	dc := draw.New(c)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	p.Draw(draw.Crop(dc, margin, -margin, capHeight, -margin))
	for i, l := range lines {
		dc.FillText(capStyle, vg.Point{X: captionMargin, Y: capHeight - captionMargin - vg.Length(i)*lineHeight}, l)
	}
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// caption is the text under a plot, in lines at most maxWidth wide: what
// a point is, the commands and machines of the data and when it was
// measured.
func caption(ms []Measurement, sty text.Style, maxWidth vg.Length) []string {
	var commands, machines, days []string
	for _, m := range ms {
		commands = append(commands, m.Command)
		machines = append(machines, m.Machine)
		days = append(days, m.At.UTC().Format("2006-01-02"))
	}
	commands, machines, days = distinct(commands), distinct(machines), distinct(days)
	when := days[0]
	if len(days) > 1 {
		when += " to " + days[len(days)-1]
	}
	var lines []string
	for _, par := range [][]string{
		{"Each point is the median of the runs at its x; whiskers span their minimum and maximum."},
		prefixed(plural(len(commands), "Command: ", "Commands: "), commands),
		prefixed(plural(len(machines), "Machine: ", "Machines: "), machines),
		{"Measured " + when + " (UTC), " + strconv.Itoa(len(ms)) + " " + plural(len(ms), "measurement", "measurements") + "."},
	} {
		lines = append(lines, wrap(par, sty, maxWidth)...)
	}
	return lines
}

// prefixed is items, "; " after each but the last and prefix before
// the first.
func prefixed(prefix string, items []string) []string {
	out := make([]string, len(items))
	for i, it := range items {
		if i == 0 {
			it = prefix + it
		}
		if i < len(items)-1 {
			it += ";"
		}
		out[i] = it
	}
	return out
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// distinct is the distinct values of v, sorted.
func distinct(v []string) []string {
	slices.Sort(v)
	return slices.Compact(v)
}

// wrap joins items with spaces into lines at most maxWidth wide in sty,
// breaking between items (a command stays on one line) and, only where
// one item is wider than a line, between its words; a word wider than a
// line gets a line of its own.
func wrap(items []string, sty text.Style, maxWidth vg.Length) []string {
	var lines []string
	cur := ""
	for _, it := range items {
		next := it
		if cur != "" {
			next = cur + " " + it
		}
		if sty.Width(next) <= maxWidth {
			cur = next
			continue
		}
		if cur != "" {
			lines = append(lines, cur)
			cur = ""
		}
		if sty.Width(it) <= maxWidth {
			cur = it
			continue
		}
		for _, w := range strings.Fields(it) {
			next := w
			if cur != "" {
				next = cur + " " + w
			}
			if cur != "" && sty.Width(next) > maxWidth {
				lines = append(lines, cur)
				next = w
			}
			cur = next
		}
	}
	if cur != "" {
		lines = append(lines, cur)
	}
	return lines
}

// medianXYs are the points of a series at their medians.
type medianXYs []point

func (m medianXYs) Len() int                    { return len(m) }
func (m medianXYs) XY(i int) (float64, float64) { return m[i].X, m[i].Median }

func medians(pts []point) medianXYs { return medianXYs(pts) }

// whiskers are the points of a series that have a spread: from their
// minimum to their maximum around their median.
type whiskers []point

func (w whiskers) Len() int                    { return len(w) }
func (w whiskers) XY(i int) (float64, float64) { return w[i].X, w[i].Median }
func (w whiskers) YError(i int) (float64, float64) {
	return w[i].Median - w[i].Min, w[i].Max - w[i].Median
}

func spread(pts []point) whiskers {
	var w whiskers
	for _, p := range pts {
		if p.Max > p.Min {
			w = append(w, p)
		}
	}
	return w
}

// logTicks marks every power of ten, labelled 1, 10, …, 1k, …, 1M, and
// the multiples 2 to 9 of each between them unlabelled.
type logTicks struct{}

func (logTicks) Ticks(min, max float64) []gplot.Tick {
	var ticks []gplot.Tick
	for e := math.Floor(math.Log10(min)); math.Pow(10, e) <= max; e++ {
		p := math.Pow(10, e)
		for k := 1.0; k < 10; k++ {
			v := k * p
			if v < min*(1-1e-9) || v > max*(1+1e-9) {
				continue
			}
			t := gplot.Tick{Value: v}
			if k == 1 {
				t.Label = human(v)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}

// humanTicks are gonum's default ticks labelled with k, M and G.
type humanTicks struct{}

func (humanTicks) Ticks(min, max float64) []gplot.Tick {
	ticks := gplot.DefaultTicks{}.Ticks(min, max)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = human(ticks[i].Value)
		}
	}
	return ticks
}

// valueTicks marks and labels the given values (a linear axis with few
// x values: partitions 1, 4, 16).
func valueTicks(xs []float64) gplot.Ticker {
	v := slices.Clone(xs)
	sort.Float64s(v)
	v = slices.Compact(v)
	return gplot.TickerFunc(func(min, max float64) []gplot.Tick {
		var ticks []gplot.Tick
		for _, x := range v {
			if x >= min && x <= max {
				ticks = append(ticks, gplot.Tick{Value: x, Label: human(x)})
			}
		}
		return ticks
	})
}

// human is v with a k, M or G suffix and at most four significant
// digits: 1.5M, 200k, 0.25.
func human(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e9:
		return strconv.FormatFloat(v/1e9, 'g', 4, 64) + "G"
	case a >= 1e6:
		return strconv.FormatFloat(v/1e6, 'g', 4, 64) + "M"
	case a >= 1e3:
		return strconv.FormatFloat(v/1e3, 'g', 4, 64) + "k"
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}
