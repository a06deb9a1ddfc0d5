package progress

import (
	"bytes"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// step is one thing a test does to a bar: advance the clock, then call
// one method (or none).
type step struct {
	after time.Duration
	set   int64 // Set(set) when >= 0
	add   int64 // Add(add) when != 0
	total int64 // SetTotal(total) when != 0
	done  bool  // Done()
}

func set(after time.Duration, n int64) step   { return step{after: after, set: n} }
func add(after time.Duration, n int64) step   { return step{after: after, set: -1, add: n} }
func total(after time.Duration, n int64) step { return step{after: after, set: -1, total: n} }
func done(after time.Duration) step           { return step{after: after, set: -1, done: true} }

func TestBar(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tty   bool
		cols  int
		total int64
		steps []step
		want  string
	}{
		{
			name:  "plain: a line at most every 5s, and at Done",
			total: 10_000_000,
			steps: []step{
				set(time.Second, 1_000_000), // too early: nothing
				set(4*time.Second, 4_200_000),
				set(time.Second, 5_000_000), // 1s after the last line: nothing
				set(4*time.Second, 9_000_000),
				set(500*time.Millisecond, 10_000_000),
				done(0),
			},
			want: "copy: 4200000/10000000 (42%), 840000/s\n" +
				"copy: 9000000/10000000 (90%), 900000/s\n" +
				"copy: 10000000/10000000 (100%) in 10.5s, 952380/s\n",
		},
		{
			name:  "plain: Add and SetTotal",
			total: 0,
			steps: []step{
				add(5*time.Second, 100),
				total(0, 400),
				add(5*time.Second, 100),
				done(time.Second),
			},
			want: "copy: 100, 20/s\n" +
				"copy: 200/400 (50%), 20/s\n" +
				"copy: 200/400 (50%) in 11.0s, 18/s\n",
		},
		{
			name:  "plain: unknown total",
			total: -1,
			steps: []step{
				set(6*time.Second, 1_234_567*6),
				done(2 * time.Second),
			},
			want: "copy: 7407402, 1234567/s\n" +
				"copy: 7407402 in 8.0s, 925925/s\n",
		},
		{
			name:  "plain: Done at once",
			total: 10,
			steps: []step{done(0)},
			want:  "copy: 0/10 (0%) in 0.0s, 0/s\n",
		},
		{
			name:  "plain: Done is idempotent, updates after it are ignored",
			total: 10,
			steps: []step{
				set(2*time.Second, 10),
				done(0),
				done(10 * time.Second),
				set(10*time.Second, 20),
				add(10*time.Second, 5),
				total(10*time.Second, 50),
			},
			want: "copy: 10/10 (100%) in 2.0s, 5/s\n",
		},
		{
			name:  "terminal: redraws one line at most every 100ms",
			tty:   true,
			total: 10_000_000,
			steps: []step{
				set(50*time.Millisecond, 100), // too early
				set(950*time.Millisecond, 1_200_000),
				set(50*time.Millisecond, 1_300_000), // too early
				set(2500*time.Millisecond, 4_200_000),
				set(time.Second, 10_000_000),
				done(500 * time.Millisecond),
			},
			want: "\rcopy [==>                           ]  12% 1,200,000/10,000,000  1.2M/s  ETA 8s" +
				"\rcopy [===========>                  ]  42% 4,200,000/10,000,000  1.2M/s  ETA 5s" +
				"\rcopy [==============================] 100% 10,000,000/10,000,000  2.2M/s       " +
				"\rcopy [==============================] 100% 10,000,000/10,000,000  2.0M/s  in 5.0s\n",
		},
		{
			name:  "terminal: a shorter line blanks the rest of the last",
			tty:   true,
			total: 0,
			steps: []step{
				set(time.Second, 1_000_000),
				total(time.Second, 2),
				set(0, 1),
				done(0),
			},
			want: "\rcopy 1,000,000  1.0M/s" +
				"\rcopy [==============================] 50000000% 1,000,000/2  500.0k/s" +
				"\rcopy [==============>               ]  50% 1/2  0/s  in 2.0s         \n",
		},
		{
			name:  "terminal: unknown total, ETA and rates",
			tty:   true,
			total: 0,
			steps: []step{
				set(time.Second, 999),
				set(time.Second, 24_000),
				done(time.Minute),
			},
			want: "\rcopy 999  999/s" +
				"\rcopy 24,000  12.0k/s" +
				"\rcopy 24,000  387/s  in 62.0s\n",
		},
		{
			name:  "terminal: long ETA",
			tty:   true,
			total: 10_000,
			steps: []step{set(time.Second, 1), set(time.Second, 2)},
			want: "\rcopy [                              ]   0% 1/10,000  1/s  ETA 2h46m" +
				"\rcopy [                              ]   0% 2/10,000  1/s  ETA 2h46m",
		},
		{
			name:  "terminal: cut to the terminal's width",
			tty:   true,
			cols:  30,
			total: 100,
			steps: []step{set(time.Second, 50), done(time.Second)},
			want: "\rcopy [==============>        " +
				"\rcopy [==============>        \n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			clk := &fakeClock{t: time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)}
			b := newBar(&out, "copy", tc.total, tc.tty, tc.cols, clk.now)
			for _, s := range tc.steps {
				clk.advance(s.after)
				switch {
				case s.set >= 0:
					b.Set(s.set)
				case s.add != 0:
					b.Add(s.add)
				case s.total != 0:
					b.SetTotal(s.total)
				case s.done:
					b.Done()
				}
			}
			if got := out.String(); got != tc.want {
				t.Errorf("output\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestFormats(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{grouped(0), "0"},
		{grouped(999), "999"},
		{grouped(1000), "1,000"},
		{grouped(-1234567), "-1,234,567"},
		{humanRate(0), "0/s"},
		{humanRate(999.9), "999/s"},
		{humanRate(1e3), "1.0k/s"},
		{humanRate(1.25e6), "1.2M/s"},
		{humanRate(3e9), "3.0G/s"},
		{clock(0), "0s"},
		{clock(1), "1s"},
		{clock(59 * time.Second), "59s"},
		{clock(65 * time.Second), "1m05s"},
		{clock(2*time.Hour + 3*time.Minute + 59*time.Second), "2h03m"},
		{bar(0, 10, 10), "          "},
		{bar(1, 10, 10), ">         "},
		{bar(5, 10, 10), "====>     "},
		{bar(10, 10, 10), "=========="},
		{bar(20, 10, 10), "=========="},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	for _, tc := range []struct{ done, total, want int64 }{
		{0, 10, 0},
		{-5, 10, 0},
		{9, 10, 90},
		{10, 10, 100},
		{1<<62 - 1, 1 << 62, 99},
		{math.MaxInt64, math.MaxInt64, 100},
		{math.MaxInt64, 1, math.MaxInt64},
	} {
		if p := percent(tc.done, tc.total); p != tc.want {
			t.Errorf("percent(%d, %d) = %d, want %d", tc.done, tc.total, p, tc.want)
		}
	}
}

// TestConcurrent: Set, Add and SetTotal from many goroutines (run with
// -race), then one final line with the sum of the Adds.
func TestConcurrent(t *testing.T) {
	var out bytes.Buffer
	clk := &fakeClock{}
	b := newBar(&out, "copy", 0, false, 0, clk.now)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				clk.advance(time.Millisecond)
				b.Add(1)
				b.Set(int64(i))
				b.Add(1)
				if i%100 == 0 {
					b.SetTotal(1 << 20)
				}
			}
		}()
	}
	wg.Wait()
	b.Set(8000)
	b.Done()
	b.Done()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "copy: 8000/1048576 (0%) in 8.0s, 1000/s") {
		t.Fatalf("last line %q of\n%s", last, out.String())
	}
	if len(lines) != 2 { // one at 5s, the final one
		t.Fatalf("%d lines:\n%s", len(lines), out.String())
	}
}

// TestNewNotTerminal: a file that is no terminal gets plain lines.
func TestNewNotTerminal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "progress")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := New(f, "copy", 10)
	if b.tty || b.interval != plainInterval {
		t.Fatalf("a regular file taken for a terminal: tty %v, interval %v", b.tty, b.interval)
	}
	b.Set(10)
	b.Done()
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(got), "copy: 10/10 (100%) in ") {
		t.Fatalf("output %q", got)
	}
	if b := New(&bytes.Buffer{}, "copy", 0); b.tty {
		t.Fatal("a buffer taken for a terminal")
	}
}

// TestNewTerminal: a terminal (the master side of a new pseudo-terminal)
// gets the redrawn line.
func TestNewTerminal(t *testing.T) {
	f, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer f.Close()
	b := New(f, "copy", 10)
	if !b.tty || b.interval != terminalInterval {
		t.Fatalf("a terminal not taken for one: tty %v, interval %v", b.tty, b.interval)
	}
}
