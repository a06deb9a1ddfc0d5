package plot

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// Measurement is one line of the measurements file.
type Measurement struct {
	Plot    string    `json:"plot"`
	Series  string    `json:"series"`
	X       float64   `json:"x"`
	Y       float64   `json:"y"`
	Command string    `json:"command"`
	Machine string    `json:"machine"`
	At      time.Time `json:"at"`
	// Line is the measurement's line number in what Read read (from 1);
	// 0 for a measurement made otherwise.
	Line int `json:"-"`
}

// figure is what this package says about a plot: its title, axes and
// the unit of its y values.
type figure struct {
	title  string
	xLabel string
	yLabel string
	logX   bool
	yScale float64 // the measurement's y times yScale is plotted
}

// figures are the known plots, by id.
var figures = map[string]figure{
	"throughput-vs-keys":       {"Throughput against live keys", "live keys", "events/s", true, 1},
	"restore-vs-keys":          {"Restore rate against changelog size", "keys in the changelog", "keys restored/s", true, 1},
	"restart-vs-keys":          {"Restart time against local state", "local keys", "seconds until deciding again", true, 1},
	"rss-vs-keys":              {"Peak memory against live keys", "live keys", "peak RSS (MiB)", true, 1.0 / (1 << 20)},
	"bytes-per-key":            {"Disk space per key", "live keys", "bytes per key on disk", true, 1},
	"throughput-vs-partitions": {"Throughput against partitions", "partitions", "events/s", false, 1},
}

// Plots returns the ids of the known plots, sorted.
func Plots() []string {
	ids := make([]string, 0, len(figures))
	for id := range figures {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// maxErrors is how many bad lines Read reports before it stops reading.
const maxErrors = 10

// Read reads measurements, one JSON object a line; blank lines are
// skipped. Its error names the line of each bad measurement (up to 10,
// joined).
func Read(r io.Reader) ([]Measurement, error) {
	var (
		ms   []Measurement
		errs []error
	)
	br := bufio.NewReader(r)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			m, perr := parse(line, n)
			if perr != nil {
				errs = append(errs, perr)
				if len(errs) == maxErrors {
					errs = append(errs, fmt.Errorf("line %d: stopped after %d bad lines", n, maxErrors))
					break
				}
			} else {
				ms = append(ms, m)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return ms, nil
}

// fields are the fields of a measurement's line, in their order.
var fields = []string{"plot", "series", "x", "y", "command", "machine", "at"}

// parse decodes and checks line number n.
func parse(line []byte, n int) (Measurement, error) {
	m, err := decode(line)
	if err == nil {
		err = check(m)
	}
	if err != nil {
		return Measurement{}, fmt.Errorf("line %d: %w", n, err)
	}
	m.Line = n
	return m, nil
}

// decode decodes a line. Field names are matched exactly (encoding/json
// alone would take "Plot" for "plot").
func decode(line []byte) (Measurement, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	var obj map[string]json.RawMessage
	if err := dec.Decode(&obj); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te):
			return Measurement{}, errors.New("not a JSON object")
		case err == io.ErrUnexpectedEOF:
			return Measurement{}, errors.New("not valid JSON: the line ends inside a value")
		}
		return Measurement{}, fmt.Errorf("not valid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if obj == nil {
		return Measurement{}, errors.New("not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return Measurement{}, errors.New("not valid JSON: more than one value on the line")
	}
	var unknown []string
	for k := range obj {
		if !slices.Contains(fields, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return Measurement{}, fmt.Errorf("unknown field %q (the fields are %s)", unknown[0], strings.Join(fields, ", "))
	}
	var (
		m  Measurement
		at string
	)
	for _, f := range []struct {
		name string
		to   any
	}{
		{"plot", &m.Plot}, {"series", &m.Series}, {"x", &m.X}, {"y", &m.Y},
		{"command", &m.Command}, {"machine", &m.Machine}, {"at", &at},
	} {
		raw, ok := obj[f.name]
		if !ok || string(raw) == "null" {
			return Measurement{}, fmt.Errorf("missing field %q", f.name)
		}
		if err := json.Unmarshal(raw, f.to); err != nil {
			want := "string"
			if _, num := f.to.(*float64); num {
				want = "number"
			}
			return Measurement{}, fmt.Errorf("field %q: want a %s, not %s", f.name, want, short(raw))
		}
	}
	t, err := time.Parse(time.RFC3339, at)
	if err != nil {
		return Measurement{}, fmt.Errorf("field \"at\": %q is not an RFC 3339 time", at)
	}
	m.At = t
	return m, nil
}

// short is raw JSON cut to 40 bytes for an error message.
func short(raw []byte) string {
	if len(raw) > 40 {
		return string(raw[:37]) + "..."
	}
	return string(raw)
}

// check checks the values of a measurement.
func check(m Measurement) error {
	f, ok := figures[m.Plot]
	if !ok {
		return fmt.Errorf("unknown plot %q (known: %s)", m.Plot, strings.Join(Plots(), ", "))
	}
	for _, s := range []struct{ name, v string }{{"series", m.Series}, {"command", m.Command}, {"machine", m.Machine}} {
		if strings.TrimSpace(s.v) == "" {
			return fmt.Errorf("field %q is empty", s.name)
		}
	}
	switch {
	case math.IsNaN(m.X) || math.IsInf(m.X, 0):
		return fmt.Errorf("x is %v", m.X)
	case math.IsNaN(m.Y) || math.IsInf(m.Y, 0):
		return fmt.Errorf("y is %v", m.Y)
	case m.X <= 0 && f.logX:
		return fmt.Errorf("x is %v: plot %q has a log x axis, x must be positive", m.X, m.Plot)
	case m.X <= 0:
		return fmt.Errorf("x is %v: plot %q counts %s, x must be positive", m.X, m.Plot, f.xLabel)
	case m.Y < 0:
		return fmt.Errorf("y is %v: plot %q measures %s, y must not be negative", m.Y, m.Plot, f.yLabel)
	}
	return nil
}

// point is the measurements of one series at one x: their median, the
// least and the greatest, and how many there are.
type point struct {
	X, Median, Min, Max float64
	N                   int
}

// series is one line of a figure, its points in the order of x.
type series struct {
	Name   string
	Points []point
}

// aggregate groups the measurements of one plot by series (sorted by
// name) and x, scaling y by yScale.
func aggregate(ms []Measurement, yScale float64) []series {
	ys := map[string]map[float64][]float64{}
	for _, m := range ms {
		if ys[m.Series] == nil {
			ys[m.Series] = map[float64][]float64{}
		}
		ys[m.Series][m.X] = append(ys[m.Series][m.X], m.Y*yScale)
	}
	var out []series
	for name, byX := range ys {
		s := series{Name: name}
		for x, v := range byX {
			slices.Sort(v)
			s.Points = append(s.Points, point{X: x, Median: median(v), Min: v[0], Max: v[len(v)-1], N: len(v)})
		}
		sort.Slice(s.Points, func(i, j int) bool { return s.Points[i].X < s.Points[j].X })
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// median is the median of sorted values: the middle one, or the mean of
// the two in the middle.
func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return sorted[n/2-1]/2 + sorted[n/2]/2
}
