package admin

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/kdedup/kdedup/dedup"
)

// Metrics are kdedup's Prometheus metrics. They implement
// consumer.Observer.
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
}

// NewMetrics registers the metrics (and the Go and process collectors) on
// a new registry.
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
	}
	m.Registry.MustRegister(m.eventsIn, m.decisions, m.transactions, m.commitTime, m.keys, m.restored, m.restoreTotal, m.rebuilds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

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
