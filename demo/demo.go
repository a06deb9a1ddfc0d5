// Package demo drives kdedup with realistic push and order events: a share
// of client retries (exact copies), key reuse with another payload
// (conflicts), bad keys, records without a key and malformed JSON. It reads
// the output and audit topics back under read_committed while it runs,
// shows progress, and ends with a summary: events in, decisions expected
// and observed per reason, throughput, and the latency from the input
// record's append to its result being visible to a read_committed reader.
package demo

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Config is the demo's built-in kdedup configuration (brokers omitted: the
// embedded broker).
const Config = `group: kdedup-demo
audit_topic: dedup.audit
commit_interval: 100ms
log_level: warn
streams:
  - name: push
    input: push-events
    output: push-events.deduped
    ttl: 1h
    key:
      - header: Idempotency-Key
      - json: data.resubmitCheckKey
      - fingerprint: [user_id, template_id, body]
    scope: [header:tenant-id]
    key_max_length: 64
  - name: order
    input: order-events
    output: order-events.deduped
    ttl: 8h
    key:
      - header: X-Client-Token
      - json: order_id
    scope: [json:tenant_id]
    key_format: uuid
`

// Options shape the generated traffic.
type Options struct {
	// Events is how many events to send. Default: 100,000.
	Events int
	// Rate is events per second; 0 sends as fast as the broker takes them.
	// Default: 20,000.
	Rate int
	// Shares of the events, each in [0, 1], the rest new events: Retries
	// are exact copies of a recent event, Conflicts reuse a recent key with
	// another payload, BadKeys carry an over-long or non-UUID key, Missing
	// carry no key at all (order events, which have no fingerprint
	// source), Malformed are not JSON.
	Retries, Conflicts, BadKeys, Missing, Malformed float64
	// Seed makes the traffic repeatable.
	Seed uint64
}

// EnsureDefaults fills unset fields.
func (o *Options) EnsureDefaults() {
	if o.Events == 0 {
		o.Events = 100_000
	}
	if o.Retries == 0 && o.Conflicts == 0 && o.BadKeys == 0 && o.Missing == 0 && o.Malformed == 0 {
		o.Retries, o.Conflicts, o.BadKeys, o.Missing, o.Malformed = 0.20, 0.05, 0.03, 0.01, 0.02
	}
}

// Validate reports every problem of the options.
func (o *Options) Validate() error {
	var errs []string
	if o.Events < 1 {
		errs = append(errs, "events must be at least 1")
	}
	if o.Rate < 0 {
		errs = append(errs, "rate must not be negative")
	}
	sum := 0.0
	for name, v := range map[string]float64{"retries": o.Retries, "conflicts": o.Conflicts, "bad-keys": o.BadKeys, "missing": o.Missing, "malformed": o.Malformed} {
		if v < 0 || v > 1 {
			errs = append(errs, fmt.Sprintf("%s share %v outside [0, 1]", name, v))
		}
		sum += v
	}
	if sum > 1 {
		errs = append(errs, fmt.Sprintf("shares add up to %v, more than 1", sum))
	}
	if len(errs) > 0 {
		return fmt.Errorf("demo: %s", strings.Join(errs, "; "))
	}
	return nil
}

// reasons in table order.
var reasons = []string{"first_seen", "duplicate", "conflict", "invalid_key", "missing_key", "malformed"}

type event struct {
	rec    *kgo.Record
	reason string
}

type generator struct {
	o      Options
	rng    *rand.Rand
	recent []*kgo.Record // first-seen events, for retries and conflicts
	n      int
}

func (g *generator) next() event {
	g.n++
	p := g.rng.Float64()
	o := g.o
	if len(g.recent) > 0 {
		switch {
		case p < o.Retries:
			return event{clone(g.recent[g.rng.IntN(len(g.recent))]), "duplicate"}
		case p < o.Retries+o.Conflicts:
			r := clone(g.recent[g.rng.IntN(len(g.recent))])
			r.Value = append(r.Value[:len(r.Value)-1], fmt.Sprintf(`,"edited":%d}`, g.n)...)
			return event{r, "conflict"}
		}
	} else {
		p = 1 // the first event is new
	}
	tenant := fmt.Sprintf("tenant-%d", g.rng.IntN(8))
	p -= o.Retries + o.Conflicts
	push := g.rng.IntN(2) == 0
	switch {
	case p >= 0 && p < o.BadKeys:
		if push {
			k := strings.Repeat("x", 65+g.rng.IntN(20))
			return event{g.push(tenant, k, true), "invalid_key"}
		}
		return event{g.order(tenant, fmt.Sprintf("order-%d", g.n), true), "invalid_key"}
	case p >= o.BadKeys && p < o.BadKeys+o.Missing:
		r := &kgo.Record{Topic: "order-events", Key: []byte(tenant), Value: []byte(fmt.Sprintf(`{"tenant_id":%q,"amount":%d}`, tenant, g.rng.IntN(10000)))}
		return event{r, "missing_key"}
	case p >= o.BadKeys+o.Missing && p < o.BadKeys+o.Missing+o.Malformed:
		r := &kgo.Record{Topic: "order-events", Key: []byte(tenant), Value: []byte(`{"tenant_id":"` + tenant + `","amount":`)}
		return event{r, "malformed"}
	}
	var r *kgo.Record
	if push {
		r = g.push(tenant, fmt.Sprintf("push-%d-%08x", g.n, g.rng.Uint32()), g.rng.IntN(10) < 7)
	} else {
		r = g.order(tenant, uuid(g.rng), g.rng.IntN(2) == 0)
	}
	g.recent = append(g.recent, r)
	if len(g.recent) > 5000 {
		g.recent = g.recent[2500:]
	}
	return event{clone(r), "first_seen"}
}

func (g *generator) push(tenant, key string, inHeader bool) *kgo.Record {
	body := fmt.Sprintf(`{"user_id":%d,"template_id":"order-shipped","body":"Your order %d has shipped"`, g.rng.IntN(100000), g.n)
	r := &kgo.Record{Topic: "push-events", Key: []byte(key), Headers: []kgo.RecordHeader{{Key: "tenant-id", Value: []byte(tenant)}}}
	if inHeader {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: "Idempotency-Key", Value: []byte(key)})
		r.Value = []byte(body + "}")
	} else {
		r.Value = []byte(body + `,"data":{"resubmitCheckKey":"` + key + `"}}`)
	}
	return r
}

func (g *generator) order(tenant, id string, inHeader bool) *kgo.Record {
	body := fmt.Sprintf(`{"tenant_id":%q,"amount":%d,"currency":"EUR"`, tenant, g.rng.IntN(100000))
	r := &kgo.Record{Topic: "order-events", Key: []byte(id)}
	if inHeader {
		r.Headers = []kgo.RecordHeader{{Key: "X-Client-Token", Value: []byte(id)}}
		r.Value = []byte(body + "}")
	} else {
		r.Value = []byte(body + `,"order_id":"` + id + `"}`)
	}
	return r
}

func uuid(rng *rand.Rand) string {
	return fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", rng.Uint32(), rng.IntN(1<<16), rng.IntN(1<<12), 0x8000|rng.IntN(1<<14), rng.Uint64()&(1<<48-1))
}

func clone(r *kgo.Record) *kgo.Record {
	return &kgo.Record{Topic: r.Topic, Key: r.Key, Value: append([]byte(nil), r.Value...), Headers: append([]kgo.RecordHeader(nil), r.Headers...)}
}

// Result is the demo's outcome.
type Result struct {
	Events   int
	Expected map[string]int
	Observed map[string]int
	Elapsed  time.Duration
	P50, P99 time.Duration
}

// Run sends the events to brokers, reads the results back and writes
// progress and the summary to w. It returns when every event's result is
// visible, or ctx ends.
func Run(ctx context.Context, brokers []string, o Options, w io.Writer) (*Result, error) {
	o.EnsureDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(2*time.Millisecond))
	if err != nil {
		return nil, err
	}
	defer prod.Close()
	read, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics("push-events.deduped", "order-events.deduped", "dedup.audit"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return nil, err
	}
	defer read.Close()
	// Read from the start (a reader starting at the end could miss the
	// first results) and count this run's events only: their timestamps
	// are the times they were sent, in Kafka's milliseconds.
	start := time.Now().Truncate(time.Millisecond)

	res := &Result{Events: o.Events, Expected: map[string]int{}, Observed: map[string]int{}}
	var mu sync.Mutex
	var latencies []time.Duration
	var seen, sent atomic.Int64
	readDone := make(chan struct{})
	rctx, cancelRead := context.WithCancel(ctx)
	defer cancelRead()
	go func() {
		defer close(readDone)
		for seen.Load() < int64(o.Events) && rctx.Err() == nil {
			fs := read.PollFetches(rctx)
			now := time.Now()
			mu.Lock()
			n := 0
			for _, r := range fs.Records() {
				if r.Timestamp.Before(start) {
					continue
				}
				n++
				reason := "first_seen"
				for _, h := range r.Headers {
					if h.Key == "dedup.reason" {
						reason = string(h.Value)
					}
				}
				res.Observed[reason]++
				latencies = append(latencies, now.Sub(r.Timestamp))
			}
			mu.Unlock()
			seen.Add(int64(n))
		}
	}()

	g := &generator{o: o, rng: rand.New(rand.NewPCG(o.Seed, 0xd3e0))}
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-readDone:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				el := time.Since(start).Seconds()
				fmt.Fprintf(w, "  %5.1fs  sent %7d  decided %7d  (%.0f events/s)\n", el, sent.Load(), seen.Load(), float64(seen.Load())/el)
			}
		}
	}()
	var produceErr atomic.Value
	for i := 0; i < o.Events && ctx.Err() == nil; i++ {
		if o.Rate > 0 {
			if ahead := time.Until(start.Add(time.Duration(float64(i) / float64(o.Rate) * float64(time.Second)))); ahead > 0 {
				time.Sleep(ahead) // pacing the generator to the requested rate
			}
		}
		ev := g.next()
		res.Expected[ev.reason]++
		ev.rec.Timestamp = time.Now()
		prod.Produce(ctx, ev.rec, func(_ *kgo.Record, err error) {
			if err != nil {
				produceErr.CompareAndSwap(nil, err)
			}
		})
		sent.Add(1)
	}
	if err := prod.Flush(ctx); err != nil {
		return nil, err
	}
	if err, _ := produceErr.Load().(error); err != nil {
		return nil, fmt.Errorf("producing demo events: %w", err)
	}
	// Wait for every result, giving up if none arrives for 30s.
	for last, lastSeen := time.Now(), seen.Load(); ; {
		select {
		case <-readDone:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
			if n := seen.Load(); n != lastSeen {
				last, lastSeen = time.Now(), n
			} else if time.Since(last) > 30*time.Second {
				return nil, fmt.Errorf("demo: only %d of %d results visible after 30s without progress", n, o.Events)
			}
			continue
		}
		break
	}
	res.Elapsed = time.Since(start)
	<-progressDone
	slices.Sort(latencies)
	if len(latencies) > 0 {
		res.P50 = latencies[len(latencies)/2]
		res.P99 = latencies[min(len(latencies)-1, len(latencies)*99/100)]
	}
	res.Write(w)
	return res, nil
}

// Write renders the summary table.
func (r *Result) Write(w io.Writer) {
	fmt.Fprintf(w, "\nkdedup demo: %d events in %.1fs, %.0f events/s\n\n", r.Events, r.Elapsed.Seconds(), float64(r.Events)/r.Elapsed.Seconds())
	fmt.Fprintf(w, "  %-12s %10s %10s\n", "decision", "expected", "observed")
	te, to := 0, 0
	for _, reason := range reasons {
		mark := "ok"
		if r.Expected[reason] != r.Observed[reason] {
			mark = "DIFFERS"
		}
		fmt.Fprintf(w, "  %-12s %10d %10d  %s\n", reason, r.Expected[reason], r.Observed[reason], mark)
		te += r.Expected[reason]
		to += r.Observed[reason]
	}
	fmt.Fprintf(w, "  %-12s %10d %10d\n", "total", te, to)
	fmt.Fprintf(w, "  (audited: %d)\n\n", to-r.Observed["first_seen"])
	fmt.Fprintf(w, "latency, input append -> result visible under read_committed: p50 %v, p99 %v\n",
		r.P50.Round(time.Millisecond), r.P99.Round(time.Millisecond))
}

// OK reports whether every decision came out as the generator intended.
func (r *Result) OK() bool {
	for _, reason := range reasons {
		if r.Expected[reason] != r.Observed[reason] {
			return false
		}
	}
	return true
}
