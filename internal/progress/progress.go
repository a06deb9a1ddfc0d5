package progress

import (
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

const (
	// terminalInterval and plainInterval are the least times between two
	// lines drawn before Done.
	terminalInterval = 100 * time.Millisecond
	plainInterval    = 5 * time.Second
	// barWidth is the number of cells between the brackets.
	barWidth = 30
)

// Bar is the progress of one piece of work. Its methods are safe for
// concurrent use.
type Bar struct {
	mu       sync.Mutex
	w        io.Writer
	label    string
	total    int64
	done     int64
	finished bool

	// Set by New, replaced by tests.
	tty      bool             // redraw one line with \r instead of writing plain lines
	cols     int              // the terminal's width; 0 when unknown
	now      func() time.Time // the clock
	interval time.Duration    // least time between two lines before Done

	start   time.Time // when New was called
	drawn   time.Time // when the last line was drawn (start before the first)
	lastLen int       // length of the last line drawn on a terminal
}

// New returns a Bar writing to w; total <= 0 means unknown (show count and rate only).
func New(w io.Writer, label string, total int64) *Bar {
	tty, cols := false, 0
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		tty = true
		if c, _, err := term.GetSize(int(f.Fd())); err == nil {
			cols = c
		}
	}
	return newBar(w, label, total, tty, cols, time.Now)
}

func newBar(w io.Writer, label string, total int64, tty bool, cols int, now func() time.Time) *Bar {
	b := &Bar{w: w, label: label, total: total, tty: tty, cols: cols, now: now, interval: plainInterval}
	if tty {
		b.interval = terminalInterval
	}
	b.start = now()
	b.drawn = b.start
	return b
}

// Set records that done units of the work are done.
func (b *Bar) Set(done int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	b.done = done
	b.maybeDraw()
}

// Add records that n more units of the work are done.
func (b *Bar) Add(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	b.done += n
	b.maybeDraw()
}

// SetTotal changes the total amount of work; total <= 0 means unknown.
func (b *Bar) SetTotal(total int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	b.total = total
	b.maybeDraw()
}

// Done ends the bar with a line stating the total time and rate. Calls
// after the first do nothing.
func (b *Bar) Done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	b.finished = true
	b.draw(b.now(), true)
}

// maybeDraw draws a line when the last is at least interval old.
// b.mu is held.
func (b *Bar) maybeDraw() {
	now := b.now()
	if now.Sub(b.drawn) < b.interval {
		return
	}
	b.draw(now, false)
}

// draw writes the line for now, the last one if final. Write errors are
// ignored: progress is a courtesy, never a reason to fail the work.
// b.mu is held.
func (b *Bar) draw(now time.Time, final bool) {
	b.drawn = now
	elapsed := now.Sub(b.start)
	rate := 0.0
	if elapsed > 0 {
		rate = float64(b.done) / elapsed.Seconds()
	}
	if !b.tty {
		io.WriteString(b.w, b.plainLine(elapsed, rate, final))
		return
	}
	line := b.terminalLine(elapsed, rate, final)
	if b.cols > 1 && len(line) > b.cols-1 {
		// A line as wide as the terminal wraps, and \r then redraws only
		// its last row.
		line = line[:b.cols-1]
	}
	pad := ""
	if n := b.lastLen - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	b.lastLen = len(line)
	end := ""
	if final {
		end = "\n"
	}
	io.WriteString(b.w, "\r"+line+pad+end)
}

// plainLine is a line for a log:
// "label: 4200000/10000000 (42%), 1234567/s", with " in 8.1s" after the
// counts of the final one.
func (b *Bar) plainLine(elapsed time.Duration, rate float64, final bool) string {
	var s strings.Builder
	s.WriteString(b.label)
	s.WriteString(": ")
	s.WriteString(strconv.FormatInt(b.done, 10))
	if b.total > 0 {
		fmt.Fprintf(&s, "/%d (%d%%)", b.total, percent(b.done, b.total))
	}
	if final {
		s.WriteString(" in ")
		s.WriteString(seconds(elapsed))
	}
	fmt.Fprintf(&s, ", %d/s\n", int64(rate))
	return s.String()
}

// terminalLine is a line for a terminal:
// "label [=====>     ]  42% 4,200,000/10,000,000  1.2M/s  ETA 5s", ending
// with "in 8.1s" instead of the ETA when final.
func (b *Bar) terminalLine(elapsed time.Duration, rate float64, final bool) string {
	var s strings.Builder
	s.WriteString(b.label)
	if b.total > 0 {
		s.WriteString(" [")
		s.WriteString(bar(b.done, b.total, barWidth))
		fmt.Fprintf(&s, "] %3d%% %s/%s", percent(b.done, b.total), grouped(b.done), grouped(b.total))
	} else {
		s.WriteString(" ")
		s.WriteString(grouped(b.done))
	}
	s.WriteString("  ")
	s.WriteString(humanRate(rate))
	switch {
	case final:
		s.WriteString("  in ")
		s.WriteString(seconds(elapsed))
	case b.total > 0 && rate > 0 && b.done < b.total:
		eta := time.Duration(float64(b.total-b.done) / rate * float64(time.Second))
		s.WriteString("  ETA ")
		s.WriteString(clock(eta))
	}
	return s.String()
}

// percent is done as a whole percentage of total, rounded down: 100 only
// when all is done.
func percent(done, total int64) int64 {
	if done <= 0 {
		return 0
	}
	// done*100 in 128 bits: exact for every int64.
	hi, lo := bits.Mul64(uint64(done), 100)
	if hi >= uint64(total) {
		return math.MaxInt64
	}
	q, _ := bits.Div64(hi, lo, uint64(total))
	return int64(min(q, math.MaxInt64))
}

// bar is width cells, "=" for the part done and ">" at its head.
func bar(done, total int64, width int) string {
	n := 0
	if done > 0 {
		n = int(float64(done) / float64(total) * float64(width))
	}
	n = min(n, width)
	switch {
	case n == width:
		return strings.Repeat("=", width)
	case n == 0:
		return strings.Repeat(" ", width)
	}
	return strings.Repeat("=", n-1) + ">" + strings.Repeat(" ", width-n)
}

// grouped is n with commas between groups of three digits.
func grouped(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var out strings.Builder
	if neg {
		out.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out.WriteByte(',')
		}
		out.WriteRune(c)
	}
	return out.String()
}

// humanRate is a rate per second with a k, M or G suffix: "950/s",
// "12.3k/s", "1.2M/s".
func humanRate(r float64) string {
	switch {
	case r >= 1e9:
		return strconv.FormatFloat(r/1e9, 'f', 1, 64) + "G/s"
	case r >= 1e6:
		return strconv.FormatFloat(r/1e6, 'f', 1, 64) + "M/s"
	case r >= 1e3:
		return strconv.FormatFloat(r/1e3, 'f', 1, 64) + "k/s"
	}
	return strconv.FormatInt(int64(r), 10) + "/s"
}

// seconds is d in seconds with one decimal: "8.1s".
func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
}

// clock is d rounded up to whole seconds: "5s", "1m05s", "2h03m".
func clock(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	}
	return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
}
