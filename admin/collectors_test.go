package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kdedup/kdedup/dedup"
	"github.com/kdedup/kdedup/state"
)

// gathered is one gathering of a registry: metric name to its series.
type gathered map[string][]*dto.Metric

func gather(t *testing.T, g prometheus.Gatherer) gathered {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := gathered{}
	for _, f := range fams {
		out[f.GetName()] = f.GetMetric()
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

func labels(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

// sum is the sum of name's series whose labels include match.
func (g gathered) sum(name string, match map[string]string) (float64, int) {
	total, n := 0.0, 0
	for _, m := range g[name] {
		l := labels(m)
		ok := true
		for k, v := range match {
			ok = ok && l[k] == v
		}
		if ok {
			total += value(m)
			n++
		}
	}
	return total, n
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a condition with a deadline
	}
}

func TestReadyGaugeAndInitialSeries(t *testing.T) {
	m := NewMetrics()
	g := gather(t, m.Registry)
	if v, n := g.sum("kdedup_ready", nil); n != 1 || v != 0 {
		t.Fatalf("kdedup_ready before SetReady = %v (%d series), want 0", v, n)
	}
	var mu sync.Mutex
	ready := false
	m.SetReady(func() bool { mu.Lock(); defer mu.Unlock(); return ready })
	if v, _ := gather(t, m.Registry).sum("kdedup_ready", nil); v != 0 {
		t.Fatalf("kdedup_ready = %v while not ready", v)
	}
	mu.Lock()
	ready = true
	mu.Unlock()
	if v, _ := gather(t, m.Registry).sum("kdedup_ready", nil); v != 1 {
		t.Fatalf("kdedup_ready = %v when ready, want 1", v)
	}
	// Aborts and rebuilds exist at zero before the first one, so that a
	// rate over them has data (the dashboard and the abort alert).
	for _, want := range []struct {
		name  string
		label map[string]string
	}{
		{"kdedup_transactions_total", map[string]string{"outcome": "aborted"}},
		{"kdedup_transactions_total", map[string]string{"outcome": "committed"}},
		{"kdedup_session_rebuilds_total", map[string]string{"reason": "unknown_outcome"}},
		{"kdedup_session_rebuilds_total", map[string]string{"reason": "partition_stalled"}},
		{"kdedup_session_rebuilds_total", map[string]string{"reason": "restore_stalled"}},
		{"kdedup_session_rebuilds_total", map[string]string{"reason": "stale_offsets"}},
	} {
		if v, n := g.sum(want.name, want.label); n != 1 || v != 0 {
			t.Errorf("%s%v = %v (%d series), want one at 0", want.name, want.label, v, n)
		}
	}
	m.Transaction(false, time.Millisecond, 1)
	m.Rebuilt("partition_stalled")
	g = gather(t, m.Registry)
	if v, _ := g.sum("kdedup_transactions_total", map[string]string{"outcome": "aborted"}); v != 1 {
		t.Errorf("aborted = %v after one abort", v)
	}
	if v, _ := g.sum("kdedup_session_rebuilds_total", map[string]string{"reason": "partition_stalled"}); v != 1 {
		t.Errorf("partition_stalled rebuilds = %v after one", v)
	}
}

func newCluster(t *testing.T, partitions int) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(partitions), "in"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestKgoHooksManyClients gives the hooks to several clients alive at once
// and to one made after another closed, as the processor does: kprom's
// own Metrics would panic on the second client's registration and drop
// its metrics when one closes.
func TestKgoHooksManyClients(t *testing.T) {
	m := NewMetrics()
	c := newCluster(t, 2)
	hooks := kgo.WithHooks(m.KgoHooks())
	newClient := func(opts ...kgo.Opt) *kgo.Client {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), hooks}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	producer := newClient(kgo.DefaultProduceTopic("in"))
	consumer := newClient(kgo.ConsumeTopics("in"))
	defer consumer.Close()
	for i := range 20 {
		if err := producer.ProduceSync(ctx, &kgo.Record{Value: fmt.Appendf(nil, "record %d", i)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	producer.Close()
	// A client made after another closed still counts.
	again := newClient(kgo.DefaultProduceTopic("in"))
	if err := again.ProduceSync(ctx, &kgo.Record{Value: []byte("after a close")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	again.Close()
	read := 0
	for read < 21 {
		f := consumer.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d of 21 records: %v", read, err)
		}
		read += f.NumRecords()
	}
	g := gather(t, m.Registry)
	for name, want := range map[string]float64{
		"kdedup_kgo_produce_records_total": 21,
		"kdedup_kgo_fetch_records_total":   21,
	} {
		if v, _ := g.sum(name, map[string]string{"topic": "in"}); v != want {
			t.Errorf("%s{topic=in} = %v, want %v", name, v, want)
		}
	}
	for _, name := range []string{"kdedup_kgo_produce_bytes_total", "kdedup_kgo_fetch_bytes_total", "kdedup_kgo_connects_total", "kdedup_kgo_write_bytes_total", "kdedup_kgo_read_bytes_total"} {
		if v, _ := g.sum(name, nil); v <= 0 {
			t.Errorf("%s = %v, want > 0", name, v)
		}
	}
	for name := range g {
		if strings.Contains(name, "buffered") {
			t.Errorf("%s exported: it would read one client only", name)
		}
	}
}

func TestPebbleCollector(t *testing.T) {
	s, err := state.Open(t.TempDir(), state.Options{Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := s.OpenPartition("in", 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b := p.NewBatch()
	for i := range 100 {
		var h dedup.Hash
		h[0], h[1] = byte(i), 0xab
		if err := b.Put(h, dedup.Entry{FirstSeen: 1000, Expiry: 1000 + time.Hour.Milliseconds(), Topic: "in", Offset: int64(i), Fingerprint: dedup.Fingerprint{1}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(100, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewPebbleCollector(s.Metrics))
	g := gather(t, reg)
	if _, n := g.sum("kdedup_pebble_level_files", nil); n != 7 {
		t.Errorf("kdedup_pebble_level_files has %d levels, want 7", n)
	}
	files, _ := g.sum("kdedup_pebble_level_files", nil)
	bytes, _ := g.sum("kdedup_pebble_level_bytes", nil)
	if files < 1 || bytes <= 0 {
		t.Errorf("after a compaction: %v files, %v bytes in the levels", files, bytes)
	}
	for _, name := range []string{"kdedup_pebble_disk_bytes", "kdedup_pebble_flushes_total", "kdedup_pebble_read_amplification"} {
		if v, n := g.sum(name, nil); n != 1 || v <= 0 {
			t.Errorf("%s = %v (%d series), want > 0", name, v, n)
		}
	}
	for _, name := range []string{"kdedup_pebble_compactions_total", "kdedup_pebble_compaction_debt_bytes", "kdedup_pebble_block_cache_bytes",
		"kdedup_pebble_block_cache_hits_total", "kdedup_pebble_block_cache_misses_total", "kdedup_pebble_memtable_bytes", "kdedup_pebble_memtables"} {
		if _, n := g.sum(name, nil); n != 1 {
			t.Errorf("%s: %d series, want 1", name, n)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if g := gather(t, reg); len(g) != 0 {
		t.Errorf("a closed store exports %d metrics", len(g))
	}
}

func TestDiskCollector(t *testing.T) {
	dir := t.TempDir()
	c := NewDiskCollector(dir)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	g := gather(t, reg)
	size, _ := g.sum("kdedup_state_fs_size_bytes", map[string]string{"dir": dir})
	used, _ := g.sum("kdedup_state_fs_used_bytes", nil)
	avail, _ := g.sum("kdedup_state_fs_avail_bytes", nil)
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if size != float64(st.Blocks)*float64(st.Bsize) || size <= 0 || used <= 0 || used > size || avail > size || used+avail > size {
		t.Errorf("size %v used %v avail %v (statfs blocks %d of %d bytes)", size, used, avail, st.Blocks, st.Bsize)
	}
	// A filesystem 95% used: the avail ratio the alerts read.
	c.statfs = func(_ string, st *syscall.Statfs_t) error {
		*st = syscall.Statfs_t{Bsize: 4096, Blocks: 1000, Bfree: 60, Bavail: 50}
		return nil
	}
	g = gather(t, reg)
	size, _ = g.sum("kdedup_state_fs_size_bytes", nil)
	used, _ = g.sum("kdedup_state_fs_used_bytes", nil)
	avail, _ = g.sum("kdedup_state_fs_avail_bytes", nil)
	if size != 4096000 || used != 940*4096 || avail/size != 0.05 {
		t.Errorf("size %v used %v avail %v, want 4096000, %v, 5%%", size, used, avail, 940*4096)
	}
	c.statfs = func(string, *syscall.Statfs_t) error { return errors.New("gone") }
	g = gather(t, reg)
	if _, n := g.sum("kdedup_state_fs_size_bytes", nil); n != 0 {
		t.Errorf("a failed statfs exports a size")
	}
	if v, _ := g.sum("kdedup_state_fs_errors_total", nil); v != 1 {
		t.Errorf("kdedup_state_fs_errors_total = %v after a failed statfs", v)
	}
}

// TestLagCollector runs a group of two static members over two partitions
// and checks that each member's collector exports the lag of its own
// partition only, and that the sum over the members is the group's.
func TestLagCollector(t *testing.T) {
	c := newCluster(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	seed := kgo.SeedBrokers(c.ListenAddrs()...)
	prod, err := kgo.NewClient(seed, kgo.DefaultProduceTopic("in"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	produce := func(partition int32, n int) {
		t.Helper()
		for range n {
			if err := prod.ProduceSync(ctx, &kgo.Record{Partition: partition, Value: []byte("v")}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	produce(0, 10)
	produce(1, 4)

	type member struct {
		cl       *kgo.Client
		mu       sync.Mutex
		assigned map[int32]bool
	}
	members := map[string]*member{}
	for _, id := range []string{"a", "b"} {
		mb := &member{assigned: map[int32]bool{}}
		track := func(add bool) func(context.Context, *kgo.Client, map[string][]int32) {
			return func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
				mb.mu.Lock()
				defer mb.mu.Unlock()
				for _, p := range m["in"] {
					if add {
						mb.assigned[p] = true
					} else {
						delete(mb.assigned, p)
					}
				}
			}
		}
		cl, err := kgo.NewClient(seed, kgo.ConsumerGroup("g"), kgo.ConsumeTopics("in"), kgo.InstanceID(id),
			kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.OnPartitionsAssigned(track(true)), kgo.OnPartitionsRevoked(track(false)), kgo.OnPartitionsLost(track(false)))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		mb.cl = cl
		members[id] = mb
		go func() {
			for ctx.Err() == nil && !cl.PollFetches(ctx).IsClientClosed() {
			}
		}()
	}
	owner := map[int32]string{}
	waitFor(t, 45*time.Second, "both members assigned one partition each", func() bool {
		clear(owner)
		for id, mb := range members {
			mb.mu.Lock()
			for p := range mb.assigned {
				owner[p] = id
			}
			mb.mu.Unlock()
		}
		return len(owner) == 2 && owner[0] != owner[1]
	})
	// The group commits 3 of partition 0 and 1 of partition 1.
	for p, at := range map[int32]int64{0: 3, 1: 1} {
		var cerr error
		members[owner[p]].cl.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{"in": {p: {Epoch: -1, Offset: at}}},
			func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
				cerr = err
				for _, t := range resp.Topics {
					for _, p := range t.Partitions {
						if e := kerr.ErrorForCode(p.ErrorCode); e != nil {
							cerr = e
						}
					}
				}
			})
		if cerr != nil {
			t.Fatalf("committing partition %d: %v", p, cerr)
		}
	}

	lagAdm, err := kgo.NewClient(seed)
	if err != nil {
		t.Fatal(err)
	}
	defer lagAdm.Close()
	want := map[int32]float64{0: 7, 1: 3}
	total := 0.0
	for _, id := range []string{"a", "b"} {
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(NewLagCollector(kadm.NewClient(lagAdm), "g", id, LagOptions{CacheFor: time.Nanosecond}))
		var g gathered
		waitFor(t, 20*time.Second, "member "+id+"'s lag", func() bool {
			g = gather(t, reg)
			return len(g["kdedup_consumer_lag"]) == 1
		})
		series := g["kdedup_consumer_lag"][0]
		l := labels(series)
		var p int32
		fmt.Sscan(l["partition"], &p)
		if l["topic"] != "in" || owner[p] != id || value(series) != want[p] {
			t.Errorf("member %s exports %v = %v; it owns partition(s) of %v, want lag %v", id, l, value(series), owner, want)
		}
		total += value(series)
		if v, _ := g.sum("kdedup_consumer_lag_errors_total", nil); v != 0 {
			t.Errorf("member %s: %v errors", id, v)
		}
	}
	if total != 10 {
		t.Errorf("lag summed over the members %v, want 10", total)
	}

	// A cached answer serves scrapes within CacheFor.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewLagCollector(kadm.NewClient(lagAdm), "g", owner[0], LagOptions{CacheFor: time.Hour}))
	if v, _ := gather(t, reg).sum("kdedup_consumer_lag", nil); v != 7 {
		t.Fatalf("lag of partition 0 = %v, want 7", v)
	}
	produce(0, 5)
	if v, _ := gather(t, reg).sum("kdedup_consumer_lag", nil); v != 7 {
		t.Errorf("lag within CacheFor = %v, want the cached 7", v)
	}
}

// TestLagCollectorSlowBroker points the collector at a broker that accepts
// connections and never answers: a scrape still ends within the timeout,
// without lag, and counts the error.
func TestLagCollectorSlowBroker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	cl, err := kgo.NewClient(kgo.SeedBrokers(ln.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewLagCollector(kadm.NewClient(cl), "g", "a", LagOptions{Timeout: 300 * time.Millisecond}))
	start := time.Now()
	g := gather(t, reg)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("a scrape with a silent broker took %v (timeout 300ms)", took)
	}
	if _, n := g.sum("kdedup_consumer_lag", nil); n != 0 {
		t.Errorf("lag exported without an answer")
	}
	if v, _ := g.sum("kdedup_consumer_lag_errors_total", nil); v != 1 {
		t.Errorf("kdedup_consumer_lag_errors_total = %v, want 1", v)
	}
	// Within CacheFor the failure is not asked again: the next scrape is
	// immediate.
	start = time.Now()
	g = gather(t, reg)
	if took := time.Since(start); took > 200*time.Millisecond {
		t.Errorf("a scrape within CacheFor of a failure took %v", took)
	}
	if v, _ := g.sum("kdedup_consumer_lag_errors_total", nil); v != 1 {
		t.Errorf("kdedup_consumer_lag_errors_total = %v, want still 1", v)
	}
}
