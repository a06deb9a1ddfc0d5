package admin

import (
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
)

// DiskCollector exports the size, the used and the available bytes of the
// filesystem holding state_dir (statfs on each scrape), as
// kdedup_state_fs_{size,used,avail}_bytes. Available is what kdedup, not
// running as root, may still write; docs/metrics.md has the alert
// thresholds.
type DiskCollector struct {
	dir               string
	size, used, avail *prometheus.Desc
	errors            prometheus.Counter
	statfs            func(string, *syscall.Statfs_t) error // syscall.Statfs; tests replace it
}

// NewDiskCollector returns a collector of dir's filesystem.
func NewDiskCollector(dir string) *DiskCollector {
	labels := prometheus.Labels{"dir": dir}
	return &DiskCollector{
		dir:    dir,
		statfs: syscall.Statfs,
		size:   prometheus.NewDesc("kdedup_state_fs_size_bytes", "Size of the filesystem holding state_dir.", nil, labels),
		used:   prometheus.NewDesc("kdedup_state_fs_used_bytes", "Bytes used on the filesystem holding state_dir (by anything, not only kdedup).", nil, labels),
		avail:  prometheus.NewDesc("kdedup_state_fs_avail_bytes", "Bytes still available to kdedup on the filesystem holding state_dir.", nil, labels),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kdedup_state_fs_errors_total", Help: "Scrapes that could not statfs state_dir.",
		}),
	}
}

// Describe implements prometheus.Collector.
func (c *DiskCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.size
	ch <- c.used
	ch <- c.avail
	c.errors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *DiskCollector) Collect(ch chan<- prometheus.Metric) {
	var st syscall.Statfs_t
	if err := c.statfs(c.dir, &st); err != nil {
		c.errors.Inc()
	} else {
		bs := float64(st.Bsize)
		ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(st.Blocks)*bs)
		ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, float64(st.Blocks-st.Bfree)*bs)
		ch <- prometheus.MustNewConstMetric(c.avail, prometheus.GaugeValue, float64(st.Bavail)*bs)
	}
	c.errors.Collect(ch)
}
