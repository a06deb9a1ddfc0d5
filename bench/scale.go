package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/internal/e2e"
	"github.com/kdedup/kdedup/internal/progress"
)

// The bench.phase values of the state at scale's events: the pre-load's,
// and the probes of a takeover or restart.
const (
	phasePreload = "preload"
	phaseProbe   = "probe"
)

// preloadSpacing is the event time between two pre-load events.
const preloadSpacing = time.Millisecond

// preloadGap is the event time between the pre-load's last event (and
// the probes) and the timed phase's first.
const preloadGap = time.Minute

// keysTTL is every stream's ttl with keys pre-loaded: the event time a
// round spans (keys events preloadSpacing apart, preloadGap, then the
// timed phase's events, 1.1s apart on average as
// e2e.Topics.NewWorkloadEnding lays them out, with a tenth more for its
// randomness) plus a day, rounded up to the hour. A key expires when the
// partition's event time passes its expiry (plus lateness): no key of a
// round does before the round has run for a day, since the latency
// phase's event times follow the clock. It depends only on keys and
// events, so every round runs the same configuration.
func keysTTL(keys, events int) time.Duration {
	timed := time.Duration(events) * 1100 * time.Millisecond
	span := time.Duration(keys)*preloadSpacing + preloadGap + timed + timed/10
	ttl := span + 24*time.Hour
	if r := ttl % time.Hour; r != 0 {
		ttl += time.Hour - r
	}
	return ttl
}

// layout is a round's event times with keys pre-loaded: the pre-load's
// events end preloadGap before the timed phase's first, at preloadEnd,
// the probes' time; the timed phase's end timedEnd.
type layout struct {
	keys       int
	preloadEnd time.Time
	timedEnd   time.Time
}

func newLayout(keys, events int, timedEnd time.Time) layout {
	timedStart := timedEnd.Add(-time.Duration(events) * 1100 * time.Millisecond)
	return layout{keys: keys, preloadEnd: timedStart.Add(-preloadGap), timedEnd: timedEnd}
}

// preloadTime is the event time of the pre-load's i-th event.
func (l layout) preloadTime(i int) time.Time {
	return l.preloadEnd.Add(-time.Duration(l.keys-i) * preloadSpacing)
}

// uuidPhase tells the order events' keys of the pre-load and the probes
// apart (the first group of the UUID).
var uuidPhase = map[string]uint32{phasePreload: 0xb0000001, phaseProbe: 0xb0000002}

// keyedEvent returns event n of phase: a push event keyed by its
// Idempotency-Key header, or (order) an order event keyed by a UUID in
// its X-Client-Token header, each under one of four tenants, the key
// distinct for every n and phase, with the header bench.phase: phase. It
// is first seen by kdedup, and becomes one live key.
func keyedEvent(tp *e2e.Topics, order bool, n uint64, phase string, ts time.Time) *kgo.Record {
	tenant := "tenant-" + strconv.FormatUint(n%4, 10)
	ph := kgo.RecordHeader{Key: phaseHeader, Value: []byte(phase)}
	if !order {
		key := phase + "-" + strconv.FormatUint(n, 10)
		return &kgo.Record{Topic: tp.PushInput, Key: []byte(key), Timestamp: ts,
			Value:   fmt.Appendf(nil, `{"user_id":%d,"template_id":"welcome","body":"hello %d"}`, n%1000, n),
			Headers: []kgo.RecordHeader{{Key: "tenant-id", Value: []byte(tenant)}, {Key: "Idempotency-Key", Value: []byte(key)}, ph}}
	}
	id := fmt.Sprintf("%08x-0000-4000-8000-%012x", uuidPhase[phase], n&(1<<48-1))
	return &kgo.Record{Topic: tp.OrderInput, Key: []byte(id), Timestamp: ts,
		Value:   fmt.Appendf(nil, `{"tenant_id":%q,"amount":%d,"currency":"EUR"}`, tenant, n%10000),
		Headers: []kgo.RecordHeader{{Key: "X-Client-Token", Value: []byte(id)}, ph}}
}

// preload runs the pre-load of pr (Options.Keys > 0): produces Keys
// events with distinct keys, half push and half order events, generated
// one by one (never held), then starts a fresh kdedup on pr's state,
// waits until every result is visible and stops it with SIGTERM, so that
// it writes its state. Its figures go to sc.
func (b *bencher) preload(ctx context.Context, pr *pipeRun, rd *reader, round int, lay layout, sc *Scale) error {
	n := b.o.Keys
	began := time.Now()
	i := 0
	next := func() *kgo.Record {
		r := keyedEvent(pr.tp, i%2 == 1, uint64(i), phasePreload, lay.preloadTime(i))
		i++
		return r
	}
	bar := progress.New(b.o.Out, pr.label+": pre-load: producing", int64(n))
	err := b.produce(ctx, n, next, bar)
	bar.Done()
	if err != nil {
		return fmt.Errorf("pre-load: %w", err)
	}
	pr.preloaded = n
	sc.Produced = time.Since(began)
	fmt.Fprintf(b.o.Out, "%s: pre-load: %s events with distinct keys produced in %.1fs (%s events/s)\n",
		pr.label, thousands(float64(n)), sc.Produced.Seconds(), thousands(float64(n)/max(sc.Produced.Seconds(), 1e-9)))

	start := time.Now()
	ch, err := b.startChild(pr, round, preloadRole)
	if err != nil {
		return err
	}
	defer ch.kill() // a no-op once it exited
	bar = progress.New(b.o.Out, pr.label+": pre-load: deciding", int64(n))
	_, err = rd.waitForProgress(ctx, ch, "results of the pre-load", func(c counts) bool { return c.preload >= n },
		func(c counts) { bar.Set(int64(c.preload)) })
	bar.Done()
	if err != nil {
		return err
	}
	f := &sc.Preload
	f.Events, f.Elapsed = n, time.Since(start)
	b.snapshot(ch, f)
	if err := ch.stop(); err != nil {
		return err
	}
	if f.WholeLife {
		f.CPU, f.PeakRSS = ch.rusage()
	}
	fmt.Fprintf(b.o.Out, "%s: pre-load: decided in %.1fs (%s events/s), peak RSS %s\n",
		pr.label, f.Elapsed.Seconds(), thousands(f.Rate()), mebibytes(f.PeakRSS))
	return nil
}

// probeStart measures a kdedup child of role (takeover or restart)
// started on pr's group after the pre-load: a probe event on every
// partition of every input, produced right after the start, and the time
// from the start until every probe's result is visible. Then it stops
// the child and returns the figures with the restores it logged.
func (b *bencher) probeStart(ctx context.Context, pr *pipeRun, rd *reader, round int, r role, lay layout) (Probe, error) {
	var p Probe
	start := time.Now()
	ch, err := b.startChild(pr, round, r)
	if err != nil {
		return p, err
	}
	defer ch.kill() // a no-op once it exited
	if err := b.sendProbes(ctx, pr, lay.preloadEnd); err != nil {
		return p, err
	}
	want := pr.probed
	if _, err := rd.waitFor(ctx, ch, "the "+string(r)+"'s probes", func(c counts) bool { return c.probes >= want }); err != nil {
		return p, err
	}
	p.Elapsed = time.Since(start)
	var f Figures
	b.snapshot(ch, &f)
	if err := ch.stop(); err != nil {
		return p, err
	}
	if f.WholeLife {
		f.CPU, f.PeakRSS = ch.rusage()
	}
	p.CPU, p.PeakRSS, p.WholeLife = f.CPU, f.PeakRSS, f.WholeLife
	if p.Restores, err = ch.restores.result(); err != nil {
		return p, fmt.Errorf("%s log: %w", ch.name, err)
	}
	fmt.Fprintf(b.o.Out, "%s: %s: deciding %.2fs after the start, peak RSS %s; %s\n",
		pr.label, r, p.Elapsed.Seconds(), mebibytes(p.PeakRSS), describeRestores(p.Restores))
	return p, nil
}

// describeRestores sums restores up for a progress line.
func describeRestores(rs []Restored) string {
	if len(rs) == 0 {
		return "no partition restored"
	}
	p := Probe{Restores: rs}
	var records int64
	from := map[string]bool{}
	for _, r := range rs {
		records += r.Records
		from[r.From] = true
	}
	src := "changelog"
	if from["input"] {
		src = "input"
		if from["changelog"] {
			src = "changelog and input"
		}
	}
	return fmt.Sprintf("%d partitions restored from the %s: %s keys from %s records, the longest in %.2fs, all in %.2fs",
		len(rs), src, thousands(float64(p.Keys())), thousands(float64(records)), p.Longest().Seconds(), p.RestoreTime().Seconds())
}

// sendProbes writes one probe event (keyedEvent: a new key) to every
// partition of pr's inputs, at event time ts.
func (b *bencher) sendProbes(ctx context.Context, pr *pipeRun, ts time.Time) error {
	var rs []*kgo.Record
	for _, order := range []bool{false, true} {
		for p := 0; p < b.o.Partitions; p++ {
			r := keyedEvent(pr.tp, order, uint64(pr.probed), phaseProbe, ts)
			r.Partition = int32(p)
			rs = append(rs, r)
			pr.probed++
		}
	}
	if err := b.manual.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		return fmt.Errorf("producing the probes: %w", err)
	}
	return nil
}

// produce sends n records made by next and waits until every one is
// acknowledged, counting the acknowledged ones on bar (if not nil).
func (b *bencher) produce(ctx context.Context, n int, next func() *kgo.Record, bar *progress.Bar) error {
	var mu sync.Mutex
	var first error
	failed := func() error {
		mu.Lock()
		defer mu.Unlock()
		return first
	}
	var acked atomic.Int64
	for i := 0; i < n; i++ {
		if i%10_000 == 0 {
			if err := failed(); err != nil {
				break
			}
			if bar != nil {
				bar.Set(acked.Load())
			}
		}
		b.bulk.Produce(ctx, next(), func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
				return
			}
			acked.Add(1)
		})
	}
	if err := b.bulk.Flush(ctx); err != nil {
		return fmt.Errorf("producing: %w", err)
	}
	if err := failed(); err != nil {
		return fmt.Errorf("producing: %w", err)
	}
	if bar != nil {
		bar.Set(acked.Load())
	}
	return nil
}

// restoreLog is a writer of a kdedup child's output that collects the
// restores its "state restored" lines report, and counts the lines (the
// child's sign of life while it restores, before it decides anything).
type restoreLog struct {
	lines    atomic.Int64
	mu       sync.Mutex
	partial  []byte
	restores []Restored
	err      error // the first "state restored" line that could not be read
}

// maxLogLine bounds the part of a line restoreLog holds: longer lines are
// no "state restored" line of kdedup's, and are skipped.
const maxLogLine = 64 << 10

func (l *restoreLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	rest := p
	for {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			break
		}
		line := rest[:i]
		if len(l.partial) > 0 {
			line = append(l.partial, line...)
		}
		l.line(line)
		l.partial = l.partial[:0]
		rest = rest[i+1:]
	}
	if len(l.partial)+len(rest) <= maxLogLine {
		l.partial = append(l.partial, rest...)
	} else {
		l.partial = append(l.partial[:0], "skipped"...) // not JSON: the line is skipped
	}
	return len(p), nil
}

func (l *restoreLog) line(line []byte) {
	l.lines.Add(1)
	r, ok, err := parseRestored(line)
	switch {
	case err != nil && l.err == nil:
		l.err = fmt.Errorf("%w: %s", err, line)
	case ok:
		l.restores = append(l.restores, r)
	}
}

// result returns the restores logged, or the first line that said a
// state was restored but could not be read.
func (l *restoreLog) result() ([]Restored, error) {
	if l == nil {
		return nil, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Restored(nil), l.restores...), l.err
}

// activity is the number of lines the child wrote so far.
func (l *restoreLog) activity() int64 {
	if l == nil {
		return 0
	}
	return l.lines.Load()
}

// restoredMessage is the message of the line kdedup logs when it restored
// a partition's state (consumer.Processor.restored).
const restoredMessage = "state restored"

// restoredLine is the part of a "state restored" line the bench reads.
type restoredLine struct {
	Message   string          `json:"message"`
	Topic     string          `json:"topic"`
	Partition *int32          `json:"partition"`
	From      string          `json:"from"`
	Records   *int64          `json:"records"`
	Keys      *int64          `json:"keys"`
	Took      json.RawMessage `json:"took"`
}

// errRestoredLine marks a "state restored" line the bench cannot read.
var errRestoredLine = errors.New(`unreadable "state restored" line`)

// parseRestored reads one line of kdedup's JSON log. ok reports a "state
// restored" line, read into r; err, a line with that message whose keys
// or took is missing or not a number of keys or a duration (zerolog
// writes took in milliseconds, a number; a Go duration string is read
// too), or whose fields are of other types. Any other line, JSON or not,
// is neither.
func parseRestored(line []byte) (r Restored, ok bool, err error) {
	if !bytes.Contains(line, []byte(restoredMessage)) {
		return r, false, nil
	}
	var msg struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(line, &msg) != nil || msg.Message != restoredMessage {
		return r, false, nil
	}
	bad := func(format string, args ...any) (Restored, bool, error) {
		return Restored{}, false, fmt.Errorf("%w: "+format, append([]any{errRestoredLine}, args...)...)
	}
	var l restoredLine
	if err := json.Unmarshal(line, &l); err != nil {
		return bad("%v", err)
	}
	if l.Keys == nil || *l.Keys < 0 {
		return bad("keys missing or negative")
	}
	if l.Records != nil && *l.Records < 0 {
		return bad("records negative")
	}
	took, err := parseTook(l.Took)
	if err != nil {
		return bad("took: %v", err)
	}
	r = Restored{Topic: l.Topic, From: l.From, Keys: *l.Keys, Took: took}
	if l.Partition != nil {
		r.Partition = *l.Partition
	}
	if l.Records != nil {
		r.Records = *l.Records
	}
	return r, true, nil
}

// parseTook reads a duration logged by zerolog's Dur: a number of
// milliseconds, or a Go duration string.
func parseTook(raw json.RawMessage) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, errors.New("missing")
	}
	var d time.Duration
	var s string
	var ms float64
	switch {
	case json.Unmarshal(raw, &s) == nil:
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, err
		}
	case json.Unmarshal(raw, &ms) == nil:
		ns := math.Round(ms * float64(time.Millisecond))
		if !(ns >= math.MinInt64 && ns < math.MaxInt64) {
			return 0, fmt.Errorf("%s ms: out of range", raw)
		}
		d = time.Duration(ns)
	default:
		return 0, fmt.Errorf("%s: want milliseconds or a duration", raw)
	}
	if d < 0 {
		return 0, fmt.Errorf("%v: negative", d)
	}
	return d, nil
}
