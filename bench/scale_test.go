package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/kdedup/kdedup/bench/plot"
	"github.com/kdedup/kdedup/internal/e2e"
)

// restoredLogLine is a "state restored" line as kdedup's logger writes it
// (consumer.Processor.restored, with the partition's context fields).
func restoredLogLine(t testing.TB, topic string, partition int32, from string, records, keys int64, took time.Duration) string {
	t.Helper()
	var buf bytes.Buffer
	log := zerolog.New(&buf).With().Timestamp().Logger().With().Str("topic", topic).Int32("partition", partition).Logger()
	log.Info().Str("from", from).Int64("records", records).Int64("keys", keys).Dur("took", took).
		Float64("records_per_s", float64(records)/max(took.Seconds(), 1e-9)).
		Int64("input", 42).Msg("state restored")
	return strings.TrimSuffix(buf.String(), "\n")
}

func TestParseRestored(t *testing.T) {
	real := restoredLogLine(t, "kdedup-bench-x.r1-kdedup.push-events", 2, "changelog", 3401, 3333, 1234567890*time.Nanosecond)
	cases := []struct {
		name string
		line string
		want Restored
		ok   bool
		err  string // the error must contain it; "" for none
	}{
		{"kdedup's line", real, Restored{Topic: "kdedup-bench-x.r1-kdedup.push-events", Partition: 2, From: "changelog", Records: 3401, Keys: 3333, Took: 1234567890 * time.Nanosecond}, true, ""},
		{"from the input, no keys", `{"level":"info","topic":"t","partition":0,"from":"input","records":0,"keys":0,"took":0.5,"message":"state restored"}`,
			Restored{Topic: "t", From: "input", Took: 500 * time.Microsecond}, true, ""},
		{"took as a duration string", `{"message":"state restored","keys":7,"took":"1.5s"}`, Restored{Keys: 7, Took: 1500 * time.Millisecond}, true, ""},
		{"another message", `{"level":"info","keys":5,"took":1,"message":"restoring state"}`, Restored{}, false, ""},
		{"the words in another field", `{"level":"warn","error":"state restored twice","message":"x"}`, Restored{}, false, ""},
		{"not JSON", `state restored: 5 keys`, Restored{}, false, ""},
		{"empty", ``, Restored{}, false, ""},
		{"keys missing", `{"message":"state restored","took":1}`, Restored{}, false, "keys missing"},
		{"keys negative", `{"message":"state restored","keys":-1,"took":1}`, Restored{}, false, "keys missing or negative"},
		{"keys not a number", `{"message":"state restored","keys":"5","took":1}`, Restored{}, false, "cannot unmarshal"},
		{"partition not a number", `{"message":"state restored","keys":5,"took":1,"partition":"p"}`, Restored{}, false, "cannot unmarshal"},
		{"took missing", `{"message":"state restored","keys":5}`, Restored{}, false, "took: missing"},
		{"took null", `{"message":"state restored","keys":5,"took":null}`, Restored{}, false, "took: missing"},
		{"took negative", `{"message":"state restored","keys":5,"took":-3}`, Restored{}, false, "negative"},
		{"took out of range", `{"message":"state restored","keys":5,"took":1e300}`, Restored{}, false, "out of range"},
		{"took not a duration", `{"message":"state restored","keys":5,"took":"soon"}`, Restored{}, false, "took"},
		{"took an object", `{"message":"state restored","keys":5,"took":{}}`, Restored{}, false, "want milliseconds"},
		{"records negative", `{"message":"state restored","keys":5,"took":1,"records":-2}`, Restored{}, false, "records negative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := parseRestored([]byte(tc.line))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, errRestoredLine) {
					t.Fatalf("err %v, want one containing %q", err, tc.err)
				}
			} else if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if ok != tc.ok || got != tc.want {
				t.Fatalf("parseRestored = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// FuzzParseRestored: whatever a line holds, parseRestored does not
// panic, reports a restore or an error (not both), never a negative
// count or time, and a restore it reports reads back the same from a
// line of its own fields.
func FuzzParseRestored(f *testing.F) {
	f.Add(restoredLogLine(f, "t", 1, "changelog", 10, 9, 3*time.Millisecond))
	for _, s := range []string{
		`{"message":"state restored","keys":7,"took":"1.5s"}`,
		`{"message":"state restored","keys":5,"took":1e300}`,
		`{"message":"state restored","keys":-5,"took":1}`,
		`{"message":"state restored","keys":5,"took":{}}`,
		`{"message":"state restored","keys":5,"took":"-1s","records":3}`,
		`state restored`, `{"message":"state restored"`, `{}`, ``,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		r, ok, err := parseRestored([]byte(line))
		if ok && err != nil {
			t.Fatalf("both a restore %+v and an error %v", r, err)
		}
		if !strings.Contains(line, restoredMessage) && (ok || err != nil) {
			t.Fatalf("a line without %q read as %+v, %v", restoredMessage, r, err)
		}
		if !ok {
			if r != (Restored{}) {
				t.Fatalf("no restore, but %+v", r)
			}
			return
		}
		if r.Keys < 0 || r.Records < 0 || r.Took < 0 {
			t.Fatalf("negative figure: %+v", r)
		}
		again, _ := json.Marshal(map[string]any{"message": restoredMessage, "topic": r.Topic, "partition": r.Partition,
			"from": r.From, "records": r.Records, "keys": r.Keys, "took": r.Took.String()})
		r2, ok2, err2 := parseRestored(again)
		if !ok2 || err2 != nil || r2 != r {
			t.Fatalf("%+v written as %s reads back as %+v, %v, %v", r, again, r2, ok2, err2)
		}
	})
}

// TestRestoreLog: lines split across writes, and long ones, are read as
// the child wrote them; a bad "state restored" line is an error.
func TestRestoreLog(t *testing.T) {
	a := restoredLogLine(t, "push", 0, "changelog", 5, 4, time.Second)
	b := restoredLogLine(t, "order", 1, "changelog", 7, 6, 2*time.Second)
	var l restoreLog
	text := a + "\n" + `{"level":"info","message":"processing"}` + "\n" + strings.Repeat("x", 2*maxLogLine) + "\n" + b + "\n" + "partial"
	for i := 0; i < len(text); i += 37 {
		if _, err := l.Write([]byte(text[i:min(i+37, len(text))])); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := l.result()
	if err != nil || len(rs) != 2 || rs[0].Keys != 4 || rs[1].Keys != 6 || rs[1].Topic != "order" || rs[1].Took != 2*time.Second {
		t.Fatalf("restores %+v, %v", rs, err)
	}
	if l.activity() != 4 {
		t.Errorf("%d lines counted, want 4 (the partial one is not a line yet)", l.activity())
	}
	p := Probe{Restores: rs}
	if p.Keys() != 10 || p.Longest() != 2*time.Second || p.RestoreTime() != 3*time.Second || p.KeysPerSecond() != 10.0/3 {
		t.Errorf("keys %d, longest %v, all %v, keys/s %v; want 10, 2s, 3s, 10/3", p.Keys(), p.Longest(), p.RestoreTime(), p.KeysPerSecond())
	}
	if (Probe{}).KeysPerSecond() != 0 {
		t.Error("keys/s without a restore")
	}
	_, _ = l.Write([]byte("\n" + `{"message":"state restored","keys":-1,"took":1}` + "\n"))
	if _, err := l.result(); err == nil || !strings.Contains(err.Error(), `"keys":-1`) {
		t.Errorf("a bad line: %v, want an error quoting it", err)
	}
	var none *restoreLog
	if rs, err := none.result(); rs != nil || err != nil || none.activity() != 0 {
		t.Error("no log: want nothing")
	}
}

// TestKeyedEvents: the pre-load's events and the probes are each the
// first of a valid key of their own (e2e's model of kdedup decides them),
// over both streams and, by their record keys, all partitions.
func TestKeyedEvents(t *testing.T) {
	tp := e2e.NewTopics("x.")
	m := tp.NewModel()
	keys := map[string]bool{}
	lay := newLayout(4000, 1000, time.Now().Add(-time.Hour))
	topics := map[string]int{}
	for i := 0; i < 4000; i++ {
		r := keyedEvent(tp, i%2 == 1, uint64(i), phasePreload, lay.preloadTime(i))
		r.Partition, r.Offset = int32(i%3), int64(i)
		if phase(r) != phasePreload {
			t.Fatalf("event %d: phase %q", i, phase(r))
		}
		e := m.Decide(r)
		if e.Reason != "first_seen" || e.Key == "" || keys[r.Topic+e.Key] {
			t.Fatalf("event %d (%s %q, %q): %s, key %q (seen before: %v)", i, r.Topic, r.Key, r.Value, e.Reason, e.Key, keys[r.Topic+e.Key])
		}
		keys[r.Topic+e.Key] = true
		topics[r.Topic]++
		if i > 0 && !r.Timestamp.After(lay.preloadTime(i-1)) {
			t.Fatalf("event %d: time %v not after the previous one's", i, r.Timestamp)
		}
	}
	if topics[tp.PushInput] != 2000 || topics[tp.OrderInput] != 2000 {
		t.Errorf("events per input: %v", topics)
	}
	for i, order := range []bool{false, true} {
		r := keyedEvent(tp, order, uint64(i), phaseProbe, lay.preloadEnd)
		r.Offset = int64(10_000 + i)
		if e := m.Decide(r); e.Reason != "first_seen" || keys[r.Topic+e.Key] || phase(r) != phaseProbe {
			t.Errorf("probe %d: %s, key %q, phase %q", i, e.Reason, e.Key, phase(r))
		}
	}
}

// TestKeysTTL: no pre-loaded key expires before the round's last event
// time; the ttl depends only on the counts.
func TestKeysTTL(t *testing.T) {
	for _, c := range []struct{ keys, events int }{{1, 1}, {20_000, 20_000}, {10_000_000, 1_000_000}, {200_000, 50_000_000}} {
		ttl := keysTTL(c.keys, c.events)
		if ttl%time.Hour != 0 {
			t.Errorf("%+v: ttl %v is not whole hours", c, ttl)
		}
		end := time.Now().Add(-eventLag)
		lay := newLayout(c.keys, c.events, end)
		first := lay.preloadTime(0)
		// The timed phase's clock runs 1.1s an event on average; allow it
		// a tenth more, and the latency phase's events a day.
		last := end.Add(time.Duration(c.events) * 110 * time.Millisecond).Add(24 * time.Hour)
		if expiry := first.Add(ttl); expiry.Before(last) {
			t.Errorf("%+v: ttl %v: the first key expires at %v, before %v", c, ttl, expiry, last)
		}
		if got := lay.preloadTime(c.keys - 1); !got.Before(lay.preloadEnd) || lay.preloadEnd.Add(preloadGap).After(end.Add(-time.Duration(c.events)*1100*time.Millisecond)) {
			t.Errorf("%+v: the pre-load ends at %v, probes at %v, the timed phase starts at %v", c, got, lay.preloadEnd, end.Add(-time.Duration(c.events)*1100*time.Millisecond))
		}
	}
	if keysTTL(20_000, 20_000) != 31*time.Hour {
		t.Errorf("keysTTL(20,000, 20,000) = %v, want 31h (20s + 1m + 24,200s + 24h, rounded up)", keysTTL(20_000, 20_000))
	}
}

// scaleReport is a report of two rounds with keys and restore, its
// figures chosen to give round numbers.
func scaleReport() Report {
	fig := func(events int, elapsed, cpu time.Duration, rss int64) Figures {
		return Figures{Events: events, Elapsed: elapsed, CPU: cpu, PeakRSS: rss, P50: time.Millisecond, P99: 2 * time.Millisecond}
	}
	restores := func(took ...time.Duration) []Restored {
		var rs []Restored
		for i, d := range took {
			rs = append(rs, Restored{Topic: "push", Partition: int32(i), From: "changelog", Records: 600_000, Keys: 500_000, Took: d})
		}
		return rs
	}
	return Report{Events: 1000, Partitions: 3, Embedded: true, Brokers: []string{"127.0.0.1:1"}, CPUs: 2, Keys: 1_000_000, Restore: true,
		TTL: keysTTL(1_000_000, 1000), Rounds: []Round{
			{Raw: fig(1000, time.Second, time.Second, 1<<20), Kdedup: fig(1000, 2*time.Second, time.Second, 300<<20),
				Scale: Scale{Preload: fig(1_000_000, 4*time.Second, 2*time.Second, 200<<20), Deciding: 1234 * time.Millisecond,
					Takeover: Probe{Elapsed: 3 * time.Second, PeakRSS: 150 << 20, Restores: restores(time.Second, 2*time.Second)},
					Restart:  Probe{Elapsed: 500 * time.Millisecond, PeakRSS: 90 << 20}}},
			{Raw: fig(1000, time.Second, time.Second, 1<<20), Kdedup: fig(1000, 4*time.Second, time.Second, 310<<20),
				Scale: Scale{Preload: fig(1_000_000, 5*time.Second, 2*time.Second, 210<<20), Deciding: 2500 * time.Millisecond,
					Takeover: Probe{Elapsed: 4 * time.Second, PeakRSS: 160 << 20, Restores: restores(4*time.Second, 3*time.Second)},
					Restart:  Probe{Elapsed: 700 * time.Millisecond, PeakRSS: 95 << 20}}},
		}}
}

// TestPlotPoints: the JSON lines of --record, byte for byte: one per
// round and figure, in the plot tool's field order.
func TestPlotPoints(t *testing.T) {
	rep := scaleReport()
	meta := PlotMeta{Command: "kdedup bench --keys 1000000 --restore --rounds 2", Machine: "2-core AMD EPYC, 24 GiB",
		At: time.Date(2026, 12, 2, 8, 0, 0, 0, time.FixedZone("CET", 3600))}
	var out bytes.Buffer
	if err := WritePlotPoints(&out, rep.PlotPoints(meta)); err != nil {
		t.Fatal(err)
	}
	tail := `,"command":"kdedup bench --keys 1000000 --restore --rounds 2","machine":"2-core AMD EPYC, 24 GiB","at":"2026-12-02T07:00:00Z"}`
	want := strings.Join([]string{
		`{"plot":"throughput-vs-keys","series":"embedded broker","x":1000000,"y":500` + tail,
		`{"plot":"rss-vs-keys","series":"embedded broker","x":1000000,"y":314572800` + tail,
		`{"plot":"restore-vs-keys","series":"embedded broker","x":1000000,"y":333333` + tail,
		`{"plot":"restart-vs-keys","series":"embedded broker","x":1000000,"y":1.234` + tail,
		`{"plot":"throughput-vs-partitions","series":"embedded broker","x":3,"y":500` + tail,
		`{"plot":"throughput-vs-keys","series":"embedded broker","x":1000000,"y":250` + tail,
		`{"plot":"rss-vs-keys","series":"embedded broker","x":1000000,"y":325058560` + tail,
		`{"plot":"restore-vs-keys","series":"embedded broker","x":1000000,"y":142857` + tail,
		`{"plot":"restart-vs-keys","series":"embedded broker","x":1000000,"y":2.5` + tail,
		`{"plot":"throughput-vs-partitions","series":"embedded broker","x":3,"y":250` + tail,
	}, "\n") + "\n"
	if out.String() != want {
		t.Errorf("plot points:\n%s\nwant:\n%s", out.String(), want)
	}
	// The plot tool reads them, every one.
	if ms, err := plot.Read(strings.NewReader(out.String())); err != nil || len(ms) != 10 {
		t.Errorf("the plot tool read %d measurements of 10: %v", len(ms), err)
	}

	// On brokers given, without keys: Apache Kafka, and no point of the
	// plots of keys (the plot tool refuses an x of 0); a series named
	// overrides.
	plain := Report{Partitions: 6, Brokers: []string{"k:9092"}, Rounds: []Round{{Kdedup: Figures{Events: 10, Elapsed: time.Second, PeakRSS: 1}}}}
	pts := plain.PlotPoints(PlotMeta{At: meta.At})
	var plots []string
	for _, p := range pts {
		plots = append(plots, fmt.Sprintf("%s %s %v %v", p.Plot, p.Series, p.X, p.Y))
	}
	if got := strings.Join(plots, "; "); got != "throughput-vs-partitions Apache Kafka 6 10" {
		t.Errorf("points without keys: %s", got)
	}
	if p := plain.PlotPoints(PlotMeta{Series: "Kafka 4.1.1, 3 brokers"}); p[0].Series != "Kafka 4.1.1, 3 brokers" {
		t.Errorf("series %q", p[0].Series)
	}
	// Every line is an object of exactly the plot tool's fields.
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil || len(m) != 7 {
			t.Errorf("%s: %v, %d fields", line, err, len(m))
		}
	}
}

func TestMachine(t *testing.T) {
	cpuinfo := []byte("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC  7B13 64-Core Processor\nprocessor\t: 1\nmodel name\t: other\n")
	meminfo := []byte("MemTotal:       24683652 kB\nMemFree:         1000 kB\n")
	if got := machine(2, cpuinfo, meminfo); got != "2-core AMD EPYC 7B13 64-Core Processor, 24 GiB" {
		t.Errorf("machine = %q", got)
	}
	if got := machine(8, nil, nil); !strings.HasPrefix(got, "8-core ") || !strings.HasSuffix(got, ", ? GiB") {
		t.Errorf("machine without /proc = %q", got)
	}
	if _, err := os.Stat("/proc/meminfo"); err == nil {
		if got := Machine(); !strings.HasSuffix(got, " GiB") || strings.HasSuffix(got, "? GiB") {
			t.Errorf("Machine() = %q", got)
		}
	}
}

func TestCommandLine(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"/usr/local/bin/kdedup", "bench", "--keys", "1000000", "--restore"}, "kdedup bench --keys 1000000 --restore"},
		{[]string{"bin/kdedup", "bench", "--series", "Apache Kafka 4.1", "--dir", ""}, "kdedup bench --series 'Apache Kafka 4.1' --dir ''"},
		{[]string{"kdedup", "bench", "--series=it's"}, `kdedup bench '--series=it'\''s'`},
		{nil, ""},
	} {
		if got := CommandLine(c.args); got != c.want {
			t.Errorf("CommandLine(%q) = %q, want %q", c.args, got, c.want)
		}
	}
}

// TestPrintScale: the state at scale's table, rows and medians.
func TestPrintScale(t *testing.T) {
	rep := scaleReport()
	m := rep.Medians()
	if m.Scale.Preload.Rate != 225_000 || m.Scale.Deciding != 1867*time.Millisecond || m.Scale.Takeover.Elapsed != 3500*time.Millisecond ||
		m.Scale.Takeover.Keys != 1_000_000 || int(m.Scale.Takeover.KeysPerSec) != 238_095 || m.Scale.Restart.PeakRSS != 92<<20+1<<19 {
		t.Errorf("scale medians %+v", m.Scale)
	}
	var out bytes.Buffer
	if err := rep.Print(&out); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
	for _, want := range []string{
		"2 CPUs, 1,000,000 live keys pre-loaded\n",
		"state at scale: 1,000,000 live keys pre-loaded before kdedup's timed phase; every stream's ttl 25h,",
		"1       pre-load        250,000       500,000            -              -               -    200 MiB\n",
		"1       takeover              -             -        3.00s      1,000,000         333,333    150 MiB\n",
		"1       restart               -             -        0.50s              -               -     90 MiB\n",
		"1       timed phase         500         1,000        1.23s              -               -    300 MiB\n",
		"median  takeover              -             -        3.50s      1,000,000         238,095    155 MiB\n",
		"median takeover to deciding 3.50s: 1,000,000 keys restored in 2 partitions at 238,095 keys/s (longest partition 3.00s, all 5.00s) / restart to deciding 0.60s (probes)",
		"state restored from the changelog",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(out.String(), "on the state kept, kdedup restored") {
		t.Errorf("a note of restores on the state kept, without any")
	}
	// Without restore: no takeover or restart rows. A restore of the
	// timed phase's child is noted.
	rep.Rounds[1].Scale.Restores = []Restored{{Keys: 500_012, Records: 12, Took: time.Millisecond}}
	rep.Restore = false
	out.Reset()
	if err := rep.Print(&out); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "takeover") || !strings.Contains(out.String(), "restart to deciding 1.87s") ||
		!strings.Contains(out.String(), "2       timed phase         250         1,000        2.50s        500,012 ") ||
		!strings.Contains(out.String(), "on the state kept, kdedup restored 1 partitions all the same, from 12 records in all") {
		t.Errorf("report without restore:\n%s", out.String())
	}
}

// TestRunKeys runs `kdedup bench --keys 20000 --restore --rounds 1` end
// to end on the embedded broker: the pre-load, the takeover, the restart
// and the timed phase on the pre-loaded state, and checks that the
// takeover restored exactly the pre-load's keys. About 10 seconds on the
// 2-core development machine, the build of kdedup included (cached): not
// skipped under -short.
func TestRunKeys(t *testing.T) {
	const keys = 20_000
	o := Options{
		Events:          5_000,
		Rounds:          1,
		Keys:            keys,
		Restore:         true,
		LatencyDuration: 300 * time.Millisecond,
		Binary:          buildKdedup(t),
		Dir:             t.TempDir(),
		Out:             testWriter{t},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Keys != keys || !rep.Restore || rep.TTL != keysTTL(keys, o.Events) || len(rep.Rounds) != 1 {
		t.Fatalf("report settings: %+v", rep)
	}
	sc := rep.Rounds[0].Scale
	if sc.Preload.Events != keys || sc.Preload.Rate() <= 0 || sc.Preload.PeakRSS <= 0 || sc.Produced <= 0 {
		t.Errorf("pre-load: %+v", sc.Preload)
	}
	if sc.Deciding <= 0 || sc.Deciding > rep.Rounds[0].Kdedup.Elapsed {
		t.Errorf("restart to deciding %v, timed phase %v", sc.Deciding, rep.Rounds[0].Kdedup.Elapsed)
	}
	tk := sc.Takeover
	if got := tk.Keys(); got != keys {
		t.Errorf("takeover restored %d keys, want %d: %+v", got, keys, tk.Restores)
	}
	if len(tk.Restores) != 2*DefaultPartitions || tk.Elapsed <= tk.Longest() || tk.KeysPerSecond() <= 0 || tk.PeakRSS <= 0 {
		t.Errorf("takeover: %d restores, to deciding %v, longest %v, keys/s %v, peak RSS %d", len(tk.Restores), tk.Elapsed, tk.Longest(), tk.KeysPerSecond(), tk.PeakRSS)
	}
	for _, r := range tk.Restores {
		if r.From != "changelog" {
			t.Errorf("restore from %q, want the changelog: %+v", r.From, r)
		}
	}
	if rs := sc.Restart; rs.Elapsed <= 0 || rs.PeakRSS <= 0 {
		t.Errorf("restart: to deciding %v, peak RSS %d", rs.Elapsed, rs.PeakRSS)
	}
	// On the state kept, kdedup need not restore; whether it does is
	// kdedup's business, which the report shows, not the bench's.
	if len(sc.Restart.Restores) > 0 || len(sc.Restores) > 0 {
		t.Logf("restarts on the state kept restored: %s; %s", describeRestores(sc.Restart.Restores), describeRestores(sc.Restores))
	}
	var out bytes.Buffer
	if err := rep.Print(&out); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
	for _, want := range []string{
		"20,000 live keys pre-loaded\n", "state at scale: 20,000 live keys", "1       pre-load ", "1       takeover ", "1       restart ",
		"1       timed phase ", "median takeover to deciding ", " 20,000 keys restored in 6 partitions at ", "restart to deciding ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	var pts bytes.Buffer
	if err := WritePlotPoints(&pts, rep.PlotPoints(PlotMeta{Command: "kdedup bench", Machine: Machine(), At: time.Now()})); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{PlotThroughputVsKeys, PlotRSSVsKeys, PlotRestoreVsKeys, PlotRestartVsKeys, PlotThroughputVsPartitions} {
		if !strings.Contains(pts.String(), `{"plot":"`+name+`","series":"embedded broker","x":`) {
			t.Errorf("no %s point:\n%s", name, pts.String())
		}
	}
	if ms, err := plot.Read(strings.NewReader(pts.String())); err != nil || len(ms) != 5 {
		t.Errorf("the plot tool read %d measurements of 5: %v", len(ms), err)
	}
	for _, f := range []string{"round1-kdedup-pre-load.log", "round1-kdedup-takeover.log", "round1-kdedup-restart.log", "round1-kdedup.log", "round1-kdedup-takeover.yaml"} {
		if _, err := os.Stat(filepath.Join(o.Dir, f)); err != nil {
			t.Error(err)
		}
	}
}
