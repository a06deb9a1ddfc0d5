package consumer

import (
	"context"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/dedup"
	"github.com/kdedup/kdedup/state"
)

func TestSeekPoints(t *testing.T) {
	const window = 10 * time.Second
	t0 := time.UnixMilli(1_000_000)
	type step struct {
		now  time.Duration // wall clock after t0
		wm   int64         // the transaction's watermark
		want int64         // seek
		// clock is the transaction's clock, 0: now.
		clock int64
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"no watermark yet", []step{{0, math.MinInt64, 0, 0}}},
		{"within the window", []step{{0, 100, 0, 0}, {time.Second, 5_000, 0, 0}, {2 * time.Second, 10_099, 0, 0}}},
		{"a point a window below", []step{
			{0, 100, 0, 0},
			{time.Second, 5_000, 0, 0},
			{2 * time.Second, 10_100, 1_000_001, 0}, // 100 <= 10_100-10_000: past the first point
			{3 * time.Second, 15_000, 1_001_001, 0}, // past the second
		}},
		{"points a second apart", []step{
			{0, 100, 0, 0},
			{500 * time.Millisecond, 200, 0, 0}, // no point: too close to the first
			{2 * time.Second, 10_150, 1_000_001, 0},
		}},
		{"the clock never goes back", []step{
			{0, 100, 0, 0},
			{-time.Minute, 200, 0, 1_000_001}, // the wall clock went back
			{-time.Minute, 300, 0, 1_000_002},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s seekPoints
			for i, st := range tc.steps {
				clock := s.next(t0.Add(st.now))
				if want := st.clock; want != 0 && clock != want {
					t.Fatalf("step %d: clock %d, want %d", i, clock, want)
				}
				if got := s.observe(st.wm, window); got != st.want {
					t.Fatalf("step %d: seek %d, want %d (points %v)", i, got, st.want, s.points)
				}
			}
		})
	}
}

// TestColdRestoreSeeks: a changelog holding many transactions of keys
// retired long ago, then live ones whose last marker carries a seek: a
// cold restore reads from the seek on, and holds exactly the live keys;
// without the seek header (or with the broker's timestamps) it reads
// everything, and holds the same keys.
func TestColdRestoreSeeks(t *testing.T) {
	for _, tc := range []struct {
		name     string
		header   bool
		wantSkip bool
	}{
		{"seek", true, true},
		{"no seek header", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newRestoreFixture(t)
			now := time.Now().UnixMilli()
			// Old transactions (clock an hour ago), keys 0-999: they
			// expire at base+1h, and a later transaction tombstones half.
			old := now - 3_600_000
			var rs []*kgo.Record
			for i := 0; i < 1000; i++ {
				e := dedup.Entry{FirstSeen: f.base, Expiry: f.base + 60_000, Topic: hoInput, Offset: int64(i)}
				k, v := state.EntryChange(hoInput, 0, hash(i), &e)
				rs = append(rs, &kgo.Record{Topic: hoChangelog, Key: k, Value: v, Timestamp: time.UnixMilli(old)})
			}
			k, v := state.MarkerChange(hoInput, 0, 1000, f.base)
			rs = append(rs, &kgo.Record{Topic: hoChangelog, Key: k, Value: v, Timestamp: time.UnixMilli(old)})
			f.produce(t, rs...)
			// Live transactions, a day of event time later, clock now:
			// keys 5000-5099; the last marker's seek is the clock past
			// the old transactions.
			rs = nil
			for i := 5000; i < 5100; i++ {
				e := dedup.Entry{FirstSeen: f.base + 86_400_000, Expiry: f.base + 86_400_000 + 3_600_000, Topic: hoInput, Offset: int64(i)}
				k, v := state.EntryChange(hoInput, 0, hash(i), &e)
				rs = append(rs, &kgo.Record{Topic: hoChangelog, Key: k, Value: v, Timestamp: time.UnixMilli(now)})
			}
			k, v = state.MarkerChange(hoInput, 0, 1100, f.base+86_400_000)
			marker := &kgo.Record{Topic: hoChangelog, Key: k, Value: v, Timestamp: time.UnixMilli(now)}
			if tc.header {
				marker.Headers = []kgo.RecordHeader{{Key: HeaderSeek, Value: strconv.AppendInt(nil, old+1, 10)}}
			}
			f.produce(t, append(rs, marker)...)

			st, err := f.p.partition(tp{hoInput, 0})
			if err != nil {
				t.Fatal(err)
			}
			if err := f.p.restore(context.Background(), st, 1100); err != nil {
				t.Fatal(err)
			}
			if got := st.part.Stamp(); got.Input != 1100 || got.Keys != 100 && tc.wantSkip {
				t.Fatalf("stamp %+v, want input 1100 and the 100 live keys", got)
			}
			for _, i := range []int{5000, 5099} {
				if !has(t, st, i) {
					t.Fatalf("live key %d not restored", i)
				}
			}
			if tc.wantSkip && has(t, st, 3) {
				t.Fatal("a key of the skipped transactions was restored")
			}
			if !tc.wantSkip && !has(t, st, 3) {
				t.Fatal("without a seek the old transaction's keys are restored (retired, for GC to collect)")
			}
		})
	}
}
