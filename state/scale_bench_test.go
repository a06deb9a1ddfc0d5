package state

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/kdedup/kdedup/dedup"
)

var (
	scaleKeysFlag     = flag.String("scale-keys", "", "BenchmarkScale: live keys to pre-load, comma-separated, one sub-benchmark each (default $KDEDUP_SCALE_KEYS, else 1000000)")
	scaleEventsFlag   = flag.Int("scale-events", 1_000_000, "BenchmarkScale: events decided in the throughput phase")
	scaleDirFlag      = flag.String("scale-dir", "", "BenchmarkScale: directory to hold the stores (default: the benchmark's temporary directory); each size's store is removed after")
	scaleSettleFlag   = flag.Duration("scale-settle", 30*time.Minute, "BenchmarkScale: longest wait for Pebble's compactions after the load")
	scaleMemLimitFlag = flag.Int64("scale-memlimit", 1<<30, "BenchmarkScale: Go memory limit while it runs, as kdedup run sets it from state.memory (0: leave it)")
	scaleProfileFlag  = flag.String("scale-cpuprofile", "", "BenchmarkScale: write CPU profiles of the load and of the throughput phase to PREFIX-load.pprof and PREFIX-decide.pprof")
	scaleIndexFlag    = flag.Int64("scale-index-memory", 384<<20, "BenchmarkScale: Options.IndexMemory (3/8 of a 1 GiB state.memory); smaller, to try the partition past its budget at fewer keys")
	scaleRecordFlag   = flag.String("scale-record", "", "BenchmarkScale: append its figures to this file as plot points (bench/plot)")
)

// scaleOptions are the Options a state.memory of 1 GiB gives kdedup run
// (cmd/kdedup memoryPlan): 3/8 of it the key indexes, with the block
// cache and memtable sizes configured beside it (-scale-index-memory
// changes the index budget).
func scaleOptions() Options {
	return Options{CacheSize: 128 << 20, MemtableSize: 16 << 20, IndexMemory: *scaleIndexFlag, FS: vfs.Default}
}

// scaleSeries names the plot points of BenchmarkScale.
const scaleSeries = "state level (Pebble, one partition)"

// scaleT0 is the first-seen time of the first key pre-loaded; key i is
// first seen i ms later and lives a year, so that nothing retires.
const (
	scaleT0  = int64(1_767_225_600_000) // 2026-01-01T00:00:00Z
	scaleTTL = 365 * 24 * time.Hour
)

// scaleEntry is the entry of the key first seen at event ts, offset off:
// a random payload fingerprint, the keyspace's own topic and partition.
func scaleEntry(ts, off int64) dedup.Entry {
	var fp dedup.Fingerprint
	binary.LittleEndian.PutUint64(fp[:8], splitmix(uint64(off)^0x2545f4914f6cdd1d))
	binary.LittleEndian.PutUint64(fp[8:], splitmix(uint64(off)^0x9e6c63d0676a9a99))
	return dedup.Entry{FirstSeen: ts, Expiry: ts + scaleTTL.Milliseconds(), Topic: "push-events", Partition: 0, Offset: off, Fingerprint: fp}
}

// scaleSizes returns the sizes to run: -scale-keys, $KDEDUP_SCALE_KEYS,
// or 1M.
func scaleSizes(b *testing.B) []int {
	spec := *scaleKeysFlag
	if spec == "" {
		spec = os.Getenv("KDEDUP_SCALE_KEYS")
	}
	if spec == "" {
		spec = "1000000"
	}
	var ns []int
	for _, f := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			b.Fatalf("-scale-keys: %q is not a positive number of keys", f)
		}
		ns = append(ns, n)
	}
	return ns
}

// scaleResult is what one run of BenchmarkScale measured.
type scaleResult struct {
	keys, liveKeys   int64
	load, settle     time.Duration
	loadIndexless    bool // the partition went without an index during the load
	restart          time.Duration
	indexReady       time.Duration // 0: without an index
	events           int
	decide           time.Duration
	foundWrong       int // lookups whose answer was not the one expected
	settledTables    uint64
	tables, total    uint64
	compact          time.Duration
	hwm              int64 // the process's peak RSS, bytes
	loadHWM          int64 // ... up to the restart
	serveHWM         int64 // ... since the restart, -1 if unknown
	indexDropped     int64 // keys when the load dropped the index, 0 if not
	outsideGo        int64 // RSS outside Go\'s memory after the throughput phase
	indexKind        string
	heapInuse        uint64 // after the throughput phase
	heapLive         uint64 // ... after a GC
	indexBytes       int64
	readAmpSettled   int
	readAmpDecided   int
	indexMisses, hit uint64
}

// BenchmarkScale measures the store at a size: one partition pre-loaded
// with N live keys (-scale-keys, a sub-benchmark each; run each size in a
// process of its own, -bench 'Scale/keys=N', for its peak RSS to be its
// own), on disk, with the Options of a 1 GiB state.memory (scaleOptions),
// whose key index budget a partition of about 25M keys passes (it then
// keeps a cuckoo filter instead of the exact index, or nothing if that
// does not fit either). For each size:
//
//   - load: N keys with random hashes through a Loader, as a restore
//     writes them (keys/s; the wait for Pebble's compactions after it is
//     reported apart, settle-s);
//   - restart: close, reopen the store and the partition, and read one
//     stored key: restart-ms to that first decision, which does not wait
//     for the key index; index-ready-ms until the index (or filter)
//     answers, -1 without one;
//   - throughput: -scale-events events decided as the processor does,
//     batches of 1,000, 9 in 10 a new key (Get, Put) and 1 in 10 a key
//     pre-loaded (Get, found), then Retire and CommitAsync (events/s, up
//     to the last checkpoint written);
//   - disk: after a full compaction, the live tables per live key (B/key)
//     and every file (disk-B/key);
//   - memory: the process's peak RSS (rss-MiB), the load's (load-rss-MiB)
//     and the restarted partition's (serve-rss-MiB), the Go heap in use after the throughput phase
//     (heap-MiB; live-heap-MiB after a GC), what the process holds
//     outside Go's memory then (outside-go-MiB: Pebble's block cache and
//     memtables, malloc'd) and the key index's (index-MiB).
//
// Progress goes to stderr as it happens; the figures to the benchmark's
// log, at its end.
//
// A size a process:
//
//	go test ./state -run '^$' -bench 'Scale/keys=100000000' -benchtime 1x -timeout 60m -scale-keys=100000000
func BenchmarkScale(b *testing.B) {
	if lim := *scaleMemLimitFlag; lim > 0 {
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(lim))
	}
	for _, n := range scaleSizes(b) {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			var r scaleResult
			for i := 0; i < b.N; i++ {
				r = runScale(b, n)
			}
			reportScale(b, r)
		})
	}
}

// runScale runs BenchmarkScale's phases once for n keys.
func runScale(b *testing.B, n int) scaleResult {
	ctx := context.Background()
	dir := b.TempDir()
	if *scaleDirFlag != "" {
		dir = filepath.Join(*scaleDirFlag, fmt.Sprintf("scale-%d", n))
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(dir)
	}
	r := scaleResult{keys: int64(n), serveHWM: -1}
	opts := scaleOptions()

	// 1. Load.
	s, err := Open(dir, opts)
	if err != nil {
		b.Fatal(err)
	}
	p, err := s.OpenPartition("push-events", 0, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	stopProfile := startProfile(b, "load")
	start := time.Now()
	l, err := p.NewLoader(0)
	if err != nil {
		b.Fatal(err)
	}
	commits, lastLog := 0, time.Now()
	for i := 0; i < n; i++ {
		if err := l.Put(randomHash(i), scaleEntry(scaleT0+int64(i), int64(i))); err != nil {
			b.Fatal(err)
		}
		if l.Full() {
			if err := l.Commit(ctx, int64(i+1), 0); err != nil {
				b.Fatal(err)
			}
			commits++
			if (p.filterOnly || p.noIndex) && r.indexDropped == 0 {
				// The Commit waited for the one before, whose Wait
				// charged the grown index past the budget. The
				// Loader goes on without one: it reads Pebble for
				// every key.
				r.indexDropped = p.Stamp().Keys
				progress("load: the exact index went past its budget at %d keys and was dropped: RSS %d MiB, peak %d MiB",
					r.indexDropped, procStatus("VmRSS")>>20, procStatus("VmHWM")>>20)
			}
			if time.Since(lastLog) >= time.Minute {
				lastLog = time.Now()
				m := s.db.Metrics()
				progress("load: %d of %d keys in %v (%.0f keys/s), read-amp %d, compaction debt %d MiB, without index %v",
					i+1, n, time.Since(start).Round(time.Second), float64(i+1)/time.Since(start).Seconds(), m.ReadAmp(), m.Compact.EstimatedDebt>>20, p.index == nil || p.stale || p.noIndex)
			}
		}
	}
	if err := l.Commit(ctx, int64(n), 0); err != nil {
		b.Fatal(err)
	}
	if err := l.Wait(); err != nil {
		b.Fatal(err)
	}
	r.load = time.Since(start)
	stopProfile()
	r.loadIndexless = p.index == nil || p.stale || p.noIndex
	if got := p.Stamp().Keys; got != int64(n) {
		b.Fatalf("loaded %d keys, the stamp counts %d", n, got)
	}
	// Pebble's compactions of what was ingested, before the restart: a
	// restarted process finds its store settled.
	start = time.Now()
	settled, readAmp := settle(s, *scaleSettleFlag)
	r.settle, r.readAmpSettled = settled.Sub(start), readAmp
	r.settledTables = s.DiskUsage().Tables
	progress("loaded %d keys in %v (%d commits), compactions settled in %v: read-amp %d, %.1f table bytes/key",
		n, r.load.Round(time.Millisecond), commits+1, r.settle.Round(time.Millisecond), r.readAmpSettled, float64(r.settledTables)/float64(n))
	p = nil
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	debug.FreeOSMemory()
	// The peak so far is the load's; the next, the restarted partition's.
	r.loadHWM = procStatus("VmHWM")
	resetHWM := clearPeakRSS()

	// 2. Restart: to the first decision, then to the key index.
	start = time.Now()
	if s, err = Open(dir, opts); err != nil {
		b.Fatal(err)
	}
	defer func() { s.Close() }()
	if p, err = s.OpenPartition("push-events", 0, time.Hour); err != nil {
		b.Fatal(err)
	}
	if _, ok, err := p.Get(randomHash(n / 2)); err != nil || !ok {
		b.Fatalf("first lookup of a stored key after the restart: found %v, error %v", ok, err)
	}
	r.restart = time.Since(start)
	for rebuilds := 0; !p.noIndex && !p.IndexReady(); {
		if p.building == nil {
			// The build failed (a filter too small): NewBatch
			// starts another.
			if rebuilds++; rebuilds > 3 {
				b.Fatal("the key index build failed 3 times")
			}
			p.NewBatch().Discard()
			continue
		}
		time.Sleep(time.Millisecond)
	}
	r.indexKind = "none"
	if !p.noIndex {
		r.indexReady = time.Since(start)
		r.indexKind = fmt.Sprintf("%T", p.index)
		switch p.index.(type) {
		case *keyIndex:
			r.indexKind = "exact index"
		case *cuckooFilter:
			r.indexKind = "cuckoo filter"
		}
	}
	progress("restart: first decision after %v, %s ready after %v", r.restart, r.indexKind, r.indexReady)

	// 3. Throughput.
	stopProfile = startProfile(b, "decide")
	rng := rand.New(rand.NewPCG(uint64(n), 0xdec1de))
	next, events := n, scaleEvents()
	missesBefore, hitsBefore := p.IndexMisses(), p.IndexHits()
	start = time.Now()
	for e := 0; e < events; {
		bt := p.NewBatch()
		for j := 0; j < 1000 && e < events; j, e = j+1, e+1 {
			id, stored := next, rng.IntN(10) == 0
			if stored {
				id = rng.IntN(n)
			} else {
				next++
			}
			ts := scaleT0 + int64(n+e)
			h := randomHash(id)
			old, ok, err := bt.Get(h)
			if err != nil {
				b.Fatal(err)
			}
			if ok != stored {
				r.foundWrong++
			}
			if !ok || old.Expiry <= ts {
				if err := bt.Put(h, scaleEntry(ts, int64(n+e))); err != nil {
					b.Fatal(err)
				}
			}
		}
		bt.SetEventTime(scaleT0 + int64(n+e) - 1)
		if _, _, err := bt.Retire(1_000, nil); err != nil {
			b.Fatal(err)
		}
		if err := bt.CommitAsync(int64(n+e), 0); err != nil {
			b.Fatal(err)
		}
	}
	if err := p.Flush(); err != nil {
		b.Fatal(err)
	}
	r.decide, r.events = time.Since(start), events
	stopProfile()
	r.indexMisses, r.hit = p.IndexMisses()-missesBefore, p.IndexHits()-hitsBefore
	r.readAmpDecided = s.db.Metrics().ReadAmp()
	r.liveKeys = p.Stamp().Keys
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.heapInuse = ms.HeapInuse
	r.outsideGo = procStatus("VmRSS") - int64(ms.Sys-ms.HeapReleased)
	progress("memory after the throughput phase: RSS %d MiB (anonymous %d, files %d), Go's %d MiB mapped (heap in use %d), outside Go %d MiB; Pebble's %s",
		procStatus("VmRSS")>>20, procStatus("RssAnon")>>20, procStatus("RssFile")>>20, (ms.Sys-ms.HeapReleased)>>20, ms.HeapInuse>>20, r.outsideGo>>20, cgoUsage(s))
	runtime.GC()
	runtime.ReadMemStats(&ms)
	r.heapLive = ms.HeapAlloc
	r.indexBytes = s.IndexBytes()
	if resetHWM {
		r.serveHWM = procStatus("VmHWM")
	}
	if r.foundWrong > 0 {
		b.Fatalf("%d lookups of %d found a new key or missed a stored one", r.foundWrong, events)
	}

	// 4. Disk, after a full compaction.
	start = time.Now()
	if err := s.Compact(ctx); err != nil {
		b.Fatal(err)
	}
	r.compact = time.Since(start)
	u := s.DiskUsage()
	r.tables, r.total = u.Tables, u.Total

	// 5. Memory: the process's peak.
	r.hwm = max(r.loadHWM, procStatus("VmHWM"))
	return r
}

// startProfile starts a CPU profile of a phase of BenchmarkScale in
// -scale-cpuprofile's file for it, if set, and returns its stop.
func startProfile(b *testing.B, phase string) (stop func()) {
	if *scaleProfileFlag == "" {
		return func() {}
	}
	f, err := os.Create(*scaleProfileFlag + "-" + phase + ".pprof")
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			b.Error(err)
		}
	}
}

// cgoUsage returns Pebble's line of its memory outside Go's heap (the
// block cache and memtables, as allocated: malloc's own overhead and
// fragmentation are not in it).
func cgoUsage(s *Store) string {
	for _, l := range strings.Split(s.db.Metrics().String(), "\n") {
		if strings.HasPrefix(l, "Cgo memory usage") {
			return strings.TrimSpace(l)
		}
	}
	return "Cgo memory usage unknown"
}

// progress writes a line of BenchmarkScale's progress to stderr at once
// (the benchmark's log is shown at its end, and cut past a few lines).
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

// scaleEvents returns the events of the throughput phase.
func scaleEvents() int {
	if *scaleEventsFlag <= 0 {
		return 1_000_000
	}
	return *scaleEventsFlag
}

// settle waits, up to limit, until Pebble has had no compaction running
// or begun for 2 s (its compaction debt need not be 0: a few L0 files
// below the compaction threshold stay, and count as debt), and returns
// when the last compaction ended and the read amplification then.
func settle(s *Store, limit time.Duration) (time.Time, int) {
	start := time.Now()
	lastBusy, lastLog, count := start, start, int64(-1)
	for {
		m := s.db.Metrics()
		if m.Compact.NumInProgress > 0 || m.Compact.Count != count {
			lastBusy, count = time.Now(), m.Compact.Count
		}
		if time.Since(lastBusy) >= 2*time.Second {
			progress("compactions settled: %d so far, debt %d MiB, %d L0 files, read-amp %d", m.Compact.Count, m.Compact.EstimatedDebt>>20, m.Levels[0].TablesCount, m.ReadAmp())
			return lastBusy, m.ReadAmp()
		}
		if time.Since(lastLog) >= time.Minute {
			lastLog = time.Now()
			progress("settling: compaction debt %d MiB, %d running, read-amp %d", m.Compact.EstimatedDebt>>20, m.Compact.NumInProgress, m.ReadAmp())
		}
		if time.Since(start) >= limit {
			progress("compactions not settled after %v: debt %d MiB, %d running, read-amp %d", limit, m.Compact.EstimatedDebt>>20, m.Compact.NumInProgress, m.ReadAmp())
			return time.Now(), m.ReadAmp()
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// procStatus returns a field of /proc/self/status in bytes (a kB field),
// -1 if unknown.
func procStatus(field string) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return -1
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return -1
		}
		return kb << 10
	}
	return -1
}

// clearPeakRSS resets the process's peak RSS (VmHWM) to its RSS now, and
// reports whether it could (Linux: /proc/self/clear_refs).
func clearPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// reportScale reports r's figures as metrics and in one log line, and
// appends them to -scale-record as plot points.
func reportScale(b *testing.B, r scaleResult) {
	mib := func(v int64) float64 { return float64(v) / (1 << 20) }
	loadRate := float64(r.keys) / r.load.Seconds()
	rate := float64(r.events) / r.decide.Seconds()
	restart := float64(r.restart.Microseconds()) / 1000
	ready := -1.0
	if r.indexReady > 0 {
		ready = float64(r.indexReady.Microseconds()) / 1000
	}
	perKey := float64(r.tables) / float64(r.liveKeys)
	totalPerKey := float64(r.total) / float64(r.liveKeys)
	b.ReportMetric(loadRate, "keys/s")
	b.ReportMetric(r.settle.Seconds(), "settle-s")
	b.ReportMetric(restart, "restart-ms")
	b.ReportMetric(ready, "index-ready-ms")
	b.ReportMetric(rate, "events/s")
	b.ReportMetric(perKey, "B/key")
	b.ReportMetric(totalPerKey, "disk-B/key")
	b.ReportMetric(mib(r.hwm), "rss-MiB")
	b.ReportMetric(mib(r.loadHWM), "load-rss-MiB")
	if r.serveHWM >= 0 {
		b.ReportMetric(mib(r.serveHWM), "serve-rss-MiB")
	}
	b.ReportMetric(mib(int64(r.heapInuse)), "heap-MiB")
	b.ReportMetric(mib(int64(r.heapLive)), "live-heap-MiB")
	b.ReportMetric(mib(r.outsideGo), "outside-go-MiB")
	b.ReportMetric(mib(r.indexBytes), "index-MiB")
	index := fmt.Sprintf("%s ready %.0f ms", r.indexKind, ready)
	if r.indexReady == 0 {
		index = "without index"
	}
	b.Logf("scale keys=%d: load %.0f keys/s (%v, settled +%v, without index during load: %v); restart to first decision %.1f ms, %s; "+
		"%d events in %v: %.0f events/s (%d lookups answered by the index, %d read Pebble; read-amp %d, %d after the load); "+
		"live keys %d: tables %d B (%.1f B/key, %.1f before the throughput phase), total %d B (%.1f B/key), compaction %v; "+
		"peak RSS %.0f MiB (load %.0f MiB, since the restart %.0f MiB; index dropped at %d keys), heap in use %.0f MiB (%.0f MiB live), outside Go %.0f MiB, index %.0f MiB",
		r.keys, loadRate, r.load.Round(time.Millisecond), r.settle.Round(time.Millisecond), r.loadIndexless, restart, index,
		r.events, r.decide.Round(time.Millisecond), rate, r.indexMisses, r.hit, r.readAmpDecided, r.readAmpSettled,
		r.liveKeys, r.tables, perKey, float64(r.settledTables)/float64(r.keys), r.total, totalPerKey, r.compact.Round(time.Millisecond),
		mib(r.hwm), mib(r.loadHWM), mib(r.serveHWM), r.indexDropped, mib(int64(r.heapInuse)), mib(int64(r.heapLive)), mib(r.outsideGo), mib(r.indexBytes))
	if *scaleRecordFlag != "" {
		if err := recordScale(*scaleRecordFlag, r, rate, perKey); err != nil {
			b.Fatal(err)
		}
	}
}

// scalePoint is one plot point as bench.PlotPoint writes it (package
// bench imports this one): its fields in this order.
type scalePoint struct {
	Plot    string  `json:"plot"`
	Series  string  `json:"series"`
	X       float64 `json:"x"`
	Y       float64 `json:"y"`
	Command string  `json:"command"`
	Machine string  `json:"machine"`
	At      string  `json:"at"`
}

// recordScale appends r's plot points to path: bytes-per-key,
// throughput-vs-keys, rss-vs-keys (the process's peak) and
// restart-vs-keys (seconds to the first decision).
func recordScale(path string, r scaleResult, rate, perKey float64) error {
	cmd := fmt.Sprintf("go test ./state -run '^$' -bench 'Scale/keys=%d' -benchtime 1x -scale-keys=%d", r.keys, r.keys)
	if ev := scaleEvents(); ev != 1_000_000 {
		cmd += fmt.Sprintf(" -scale-events=%d", ev)
	}
	at := time.Now().UTC().Format(time.RFC3339)
	x := float64(r.keys)
	pts := []scalePoint{
		{Plot: "bytes-per-key", Y: math.Round(perKey*10) / 10},
		{Plot: "throughput-vs-keys", Y: math.Round(rate)},
		{Plot: "rss-vs-keys", Y: float64(r.hwm)},
		{Plot: "restart-vs-keys", Y: math.Round(r.restart.Seconds()*1000) / 1000},
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for _, pt := range pts {
		pt.Series, pt.X, pt.Command, pt.Machine, pt.At = scaleSeries, x, cmd, scaleMachine(), at
		if err := enc.Encode(pt); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(buf.Bytes())
	return errors.Join(err, f.Close())
}

// scaleMachine describes the machine as bench.Machine does: `<n>-core
// <CPU model>, <memory> GiB`.
func scaleMachine() string {
	model := runtime.GOARCH
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if ok && strings.TrimSpace(k) == "model name" && strings.TrimSpace(v) != "" {
				model = strings.Join(strings.Fields(v), " ")
				break
			}
		}
	}
	mem := "?"
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				if f := strings.Fields(v); len(f) == 2 && f[1] == "kB" {
					if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
						mem = strconv.FormatInt(int64(math.Round(float64(kb)/(1<<20))), 10)
					}
				}
				break
			}
		}
	}
	return fmt.Sprintf("%d-core %s, %s GiB", runtime.NumCPU(), model, mem)
}
