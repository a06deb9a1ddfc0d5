package admin

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/consumer"
	"github.com/kdedup/kdedup/dedup"
)

// Metrics are kdedup's Prometheus metrics. They implement
// consumer.Observer. docs/metrics.md lists them all.
type Metrics struct {
	Registry     *prometheus.Registry
	eventsIn     *prometheus.CounterVec
	decisions    *prometheus.CounterVec
	transactions *prometheus.CounterVec
	commitTime   prometheus.Histogram
	keys         *prometheus.GaugeVec
	restored     *prometheus.GaugeVec
	restoreTotal *prometheus.GaugeVec
	rebuilds     *prometheus.CounterVec
	diskFull     prometheus.Gauge
	ready        atomic.Pointer[func() bool]
	kgo          kgoHooks
}

// NewMetrics registers the metrics (and the Go and process collectors, and
// the franz-go client metrics KgoHooks feeds) on a new registry. The
// transaction outcomes and the rebuild reasons start at zero, so that a
// rate over them has data before the first abort or rebuild.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		eventsIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kdedup_events_in_total", Help: "Input records decided, by stream.",
		}, []string{"stream"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kdedup_decisions_total", Help: "Decisions by stream and reason (first_seen, duplicate, conflict, invalid_key, missing_key, malformed).",
		}, []string{"stream", "reason"}),
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kdedup_transactions_total", Help: "Transactions ended, by outcome (committed, aborted).",
		}, []string{"outcome"}),
		commitTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kdedup_commit_seconds", Help: "Time to end a transaction (flush, offset commit, EndTxn).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		keys: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kdedup_state_keys", Help: "Keys stored per input partition.",
		}, []string{"topic", "partition"}),
		restored: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kdedup_restore_records", Help: "Records replayed by the current or last restore of a partition.",
		}, []string{"topic", "partition"}),
		restoreTotal: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kdedup_restore_records_total", Help: "Records the current or last restore of a partition has to replay.",
		}, []string{"topic", "partition"}),
		rebuilds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kdedup_session_rebuilds_total", Help: "Client sessions ended by a failure and rebuilt (the group rejoined), by reason (unknown_outcome, partition_stalled, restore_stalled, stale_offsets).",
		}, []string{"reason"}),
		diskFull: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kdedup_state_disk_full", Help: "1 while the state's file system is below state.min_free_space and nothing is decided, else 0.",
		}),
	}
	readyGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kdedup_ready", Help: "1 when the processor consumes with every assigned partition restored (as /readyz answers 200), else 0.",
	}, func() float64 {
		if f := m.ready.Load(); f != nil && (*f)() {
			return 1
		}
		return 0
	})
	m.Registry.MustRegister(m.eventsIn, m.decisions, m.transactions, m.commitTime, m.keys, m.restored, m.restoreTotal, m.rebuilds, m.diskFull, readyGauge,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, o := range []string{"committed", "aborted"} {
		m.transactions.WithLabelValues(o)
	}
	for _, r := range []string{consumer.RebuildUnknownOutcome, consumer.RebuildPartitionStalled, consumer.RebuildRestoreStalled, consumer.RebuildStaleOffsets} {
		m.rebuilds.WithLabelValues(r)
	}
	m.kgo = newKgoHooks(m.Registry)
	return m
}

// SetReady makes kdedup_ready report ready (the processor's Ready); until
// it is called, kdedup_ready is 0.
func (m *Metrics) SetReady(ready func() bool) { m.ready.Store(&ready) }

// KgoHooks returns the hooks that add a franz-go client's events to the
// kdedup_kgo_* metrics: give every client kgo.WithHooks(m.KgoHooks()).
// Any number of clients, alive at once or one after another, may share
// them.
func (m *Metrics) KgoHooks() kgo.Hook { return m.kgo }

// Decided counts n decisions r of stream. Safe for concurrent use.
func (m *Metrics) Decided(stream string, r dedup.Reason, n int) {
	m.eventsIn.WithLabelValues(stream).Add(float64(n))
	m.decisions.WithLabelValues(stream, r.String()).Add(float64(n))
}

// Transaction counts an ended transaction and its latency.
func (m *Metrics) Transaction(committed bool, took time.Duration, _ int) {
	outcome := "aborted"
	if committed {
		outcome = "committed"
	}
	m.transactions.WithLabelValues(outcome).Inc()
	m.commitTime.Observe(took.Seconds())
}

// Restored sets a partition's restore progress.
func (m *Metrics) Restored(topic string, partition int32, done, total int64) {
	p := strconv.Itoa(int(partition))
	m.restored.WithLabelValues(topic, p).Set(float64(done))
	m.restoreTotal.WithLabelValues(topic, p).Set(float64(total))
}

// Keys sets a partition's stored key count.
func (m *Metrics) Keys(topic string, partition int32, n int64) {
	m.keys.WithLabelValues(topic, strconv.Itoa(int(partition))).Set(float64(n))
}

// Rebuilt counts a client session rebuilt after a failure.
func (m *Metrics) Rebuilt(reason string) { m.rebuilds.WithLabelValues(reason).Inc() }

// DiskFull sets kdedup_state_disk_full.
func (m *Metrics) DiskFull(full bool) {
	v := 0.0
	if full {
		v = 1
	}
	m.diskFull.Set(v)
}
