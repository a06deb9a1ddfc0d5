package admin

import (
	"strconv"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// PebbleCollector exports Pebble's own metrics of the state store as
// kdedup_pebble_*, read on each scrape.
type PebbleCollector struct {
	metrics func() *pebble.Metrics
	descs   pebbleDescs
}

type pebbleDescs struct {
	levelFiles, levelBytes, levelScore                          *prometheus.Desc
	readAmp, compactions, compactionDebt, compactionsInProgress *prometheus.Desc
	flushes, cacheBytes, cacheHits, cacheMisses                 *prometheus.Desc
	memtableBytes, memtables, diskBytes, walBytes, tableIters   *prometheus.Desc
}

func pebbleDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("kdedup_pebble_"+name, help, labels, nil)
}

// NewPebbleCollector returns a collector that calls metrics on each scrape
// (state.Store.Metrics); nil from it (a closed store) exports nothing.
func NewPebbleCollector(metrics func() *pebble.Metrics) *PebbleCollector {
	return &PebbleCollector{metrics: metrics, descs: pebbleDescs{
		levelFiles:            pebbleDesc("level_files", "Sstables in the LSM level.", "level"),
		levelBytes:            pebbleDesc("level_bytes", "Bytes of the sstables in the LSM level.", "level"),
		levelScore:            pebbleDesc("level_score", "Compaction score of the LSM level (compactions are wanted above 1).", "level"),
		readAmp:               pebbleDesc("read_amplification", "Read amplification: L0 sublevels plus the non-empty levels below."),
		compactions:           pebbleDesc("compactions_total", "Compactions done since the store was opened."),
		compactionDebt:        pebbleDesc("compaction_debt_bytes", "Estimated bytes still to compact for the LSM to reach a stable state."),
		compactionsInProgress: pebbleDesc("compactions_in_progress", "Compactions running."),
		flushes:               pebbleDesc("flushes_total", "Memtable flushes since the store was opened."),
		cacheBytes:            pebbleDesc("block_cache_bytes", "Bytes held by the block cache."),
		cacheHits:             pebbleDesc("block_cache_hits_total", "Block cache hits since the store was opened."),
		cacheMisses:           pebbleDesc("block_cache_misses_total", "Block cache misses since the store was opened."),
		memtableBytes:         pebbleDesc("memtable_bytes", "Bytes allocated by the memtables (the mutable one and those waiting to flush)."),
		memtables:             pebbleDesc("memtables", "Memtables (the mutable one and those waiting to flush)."),
		diskBytes:             pebbleDesc("disk_bytes", "Disk space the store uses: sstables, blob files, WAL and obsolete files not yet deleted."),
		walBytes:              pebbleDesc("wal_bytes", "Bytes of live write-ahead log data."),
		tableIters:            pebbleDesc("table_iterators", "Open sstable iterators."),
	}}
}

// Describe implements prometheus.Collector.
func (c *PebbleCollector) Describe(ch chan<- *prometheus.Desc) {
	d := c.descs
	for _, x := range []*prometheus.Desc{d.levelFiles, d.levelBytes, d.levelScore, d.readAmp, d.compactions, d.compactionDebt,
		d.compactionsInProgress, d.flushes, d.cacheBytes, d.cacheHits, d.cacheMisses, d.memtableBytes, d.memtables,
		d.diskBytes, d.walBytes, d.tableIters} {
		ch <- x
	}
}

// Collect implements prometheus.Collector.
func (c *PebbleCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.metrics()
	if m == nil {
		return
	}
	d := c.descs
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	counter := func(desc *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v)
	}
	for i := range m.Levels {
		l := &m.Levels[i]
		level := strconv.Itoa(i)
		gauge(d.levelFiles, float64(l.TablesCount), level)
		gauge(d.levelBytes, float64(l.TablesSize), level)
		gauge(d.levelScore, l.Score, level)
	}
	gauge(d.readAmp, float64(m.ReadAmp()))
	counter(d.compactions, float64(m.Compact.Count))
	gauge(d.compactionDebt, float64(m.Compact.EstimatedDebt))
	gauge(d.compactionsInProgress, float64(m.Compact.NumInProgress))
	counter(d.flushes, float64(m.Flush.Count))
	gauge(d.cacheBytes, float64(m.BlockCache.Size))
	counter(d.cacheHits, float64(m.BlockCache.Hits))
	counter(d.cacheMisses, float64(m.BlockCache.Misses))
	gauge(d.memtableBytes, float64(m.MemTable.Size))
	gauge(d.memtables, float64(m.MemTable.Count))
	gauge(d.diskBytes, float64(m.DiskSpaceUsage()))
	gauge(d.walBytes, float64(m.WAL.Size))
	gauge(d.tableIters, float64(m.TableIters))
}
