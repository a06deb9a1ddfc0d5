package e2e_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/config"
)

// procStatus returns a field of /proc/PID/status in bytes (VmRSS,
// VmHWM), 0 if unknown.
func procStatus(pid int, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// eventsIn returns the sum of kdedup_events_in_total on the instance's
// /metrics.
func eventsIn(t *testing.T, admin string) int64 {
	var n float64
	for _, line := range strings.Split(metrics(t, admin), "\n") {
		if strings.HasPrefix(line, "kdedup_events_in_total{") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			n += v
		}
	}
	return int64(n)
}

// saveHeapProfile writes the instance's heap profile (/debug/pprof/heap on
// its loopback admin address) to path.
func saveHeapProfile(t *testing.T, admin, path string) {
	b, err := adminGet(admin, "/debug/pprof/heap", 0)
	if err == nil {
		err = os.WriteFile(path, b, 0o644)
	}
	if err != nil {
		t.Logf("heap profile: %v", err)
	}
}

// TestMemoryFlood sends KDEDUP_FLOOD_KEYS distinct keys (default 300,000;
// make flood: 10 million), all within one ttl, as fast as the producer
// can, to a kdedup whose state.memory is KDEDUP_FLOOD_MEMORY (default
// 512MiB), and requires its peak RSS (VmHWM) to stay within that budget
// while it decides them all. At 256MiB the budget is not kept under such
// a flood (docs/operations.md, "Sizing memory").
// KDEDUP_FLOOD_HEAP_PROFILE=FILE keeps the heap profile taken at the
// highest RSS seen.
func TestMemoryFlood(t *testing.T) {
	keys := 300_000
	if s := os.Getenv("KDEDUP_FLOOD_KEYS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("KDEDUP_FLOOD_KEYS=%q", s)
		}
		keys = n
	}
	budget := config.ByteSize(512 << 20)
	if s := os.Getenv("KDEDUP_FLOOD_MEMORY"); s != "" {
		if err := budget.UnmarshalText([]byte(s)); err != nil {
			t.Fatalf("KDEDUP_FLOOD_MEMORY=%q: %v", s, err)
		}
	}
	e := fakeSetup(t)
	admin := freeAddr(t)
	in := start(t, e.config(t, "a", fmt.Sprintf("admin_addr: %s\nstate:\n  memory: %s\n", admin, budget)))
	pid := in.cmd.Process.Pid
	cl, err := kgo.NewClient(e.conn(kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(100_000))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	began := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var perr error
	now := time.Now()
	for i := range keys {
		wg.Add(1)
		r := &kgo.Record{Topic: e.tp.PushInput, Timestamp: now, Value: []byte(`{"n":1}`), Headers: []kgo.RecordHeader{
			{Key: "Idempotency-Key", Value: []byte("flood-" + strconv.Itoa(i))}, {Key: "tenant-id", Value: []byte("t")}}}
		cl.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				mu.Lock()
				perr = err
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if perr != nil {
		t.Fatal(perr)
	}
	produced := time.Since(began)

	var peakRSS int64
	deadline := time.Now().Add(30 * time.Minute)
	profile := os.Getenv("KDEDUP_FLOOD_HEAP_PROFILE")
	for {
		if rss := procStatus(pid, "VmRSS"); rss > peakRSS {
			peakRSS = rss
			if profile != "" {
				// Where the memory is at the highest RSS seen so far
				// (go tool pprof -sample_index=inuse_space FILE).
				saveHeapProfile(t, admin, profile)
			}
		}
		if n := eventsIn(t, admin); n >= int64(keys) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kdedup decided %d of %d keys in 30 minutes", eventsIn(t, admin), keys)
		}
		select {
		case err := <-in.done:
			t.Fatalf("kdedup exited during the flood: %v\n%s", err, in.logs)
		case <-time.After(500 * time.Millisecond): // sampling RSS: a rate, not a condition
		}
	}
	took := time.Since(began)
	hwm := procStatus(pid, "VmHWM")
	in.stop(t)
	t.Logf("memory flood: %d distinct keys in %v (produced in %v), %.0f keys/s; state.memory %s; peak RSS %.1f MiB (VmHWM), %.0f%% of the budget",
		keys, took.Round(time.Millisecond), produced.Round(time.Millisecond), float64(keys)/took.Seconds(), budget, float64(hwm)/(1<<20), 100*float64(hwm)/float64(budget))
	if hwm == 0 {
		t.Skip("no /proc: peak RSS unknown")
	}
	if hwm > int64(budget) {
		t.Errorf("peak RSS %.1f MiB is above state.memory %s", float64(hwm)/(1<<20), budget)
	}
}
