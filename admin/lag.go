package admin

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
)

// LagCollector exports kdedup_consumer_lag{topic,partition}: how many
// records of each input partition assigned to this instance the group has
// not committed yet (the partition's end offset minus the group's
// committed offset). Only the partitions of the group member whose
// instance id is this instance's are exported, so that the sum over
// instances counts each partition once.
//
// The brokers are asked on a scrape at most once per CacheFor, each time
// within Timeout: a slow or unreachable broker delays /metrics by at most
// Timeout and then exports no lag (and counts
// kdedup_consumer_lag_errors_total) rather than hanging.
type LagCollector struct {
	adm      *kadm.Client
	group    string
	instance string
	opts     LagOptions

	lag, age *prometheus.Desc
	errors   prometheus.Counter

	mu    sync.Mutex
	asked time.Time // the last question's time; zero: never asked
	got   time.Time // the last answer's time; zero: none
	lags  []partitionLag
}

// LagOptions tune a LagCollector; zero values take the defaults.
type LagOptions struct {
	// CacheFor is how long an answer serves scrapes (default 5s).
	CacheFor time.Duration
	// Timeout bounds one question to the brokers (default 3s).
	Timeout time.Duration
}

type partitionLag struct {
	topic     string
	partition int32
	lag       int64
}

// NewLagCollector returns a collector of group's lag for the member with
// instance id instanceID, asking the brokers through adm (a client of its
// own: the caller closes it after the last scrape).
func NewLagCollector(adm *kadm.Client, group, instanceID string, opts LagOptions) *LagCollector {
	if opts.CacheFor <= 0 {
		opts.CacheFor = 5 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 3 * time.Second
	}
	return &LagCollector{
		adm: adm, group: group, instance: instanceID, opts: opts,
		lag: prometheus.NewDesc("kdedup_consumer_lag",
			"Records of an input partition assigned to this instance not yet committed by the group (end offset minus committed offset).",
			[]string{"topic", "partition"}, nil),
		age: prometheus.NewDesc("kdedup_consumer_lag_age_seconds",
			"Age of the lag exported: seconds since the brokers last answered the question.", nil, nil),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kdedup_consumer_lag_errors_total", Help: "Failed or timed-out questions to the brokers for the group's lag.",
		}),
	}
}

// Describe implements prometheus.Collector.
func (c *LagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lag
	ch <- c.age
	c.errors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *LagCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.asked) >= c.opts.CacheFor {
		c.asked = time.Now()
		lags, err := c.ask()
		if err != nil {
			c.errors.Inc()
			c.lags = nil
		} else {
			c.lags, c.got = lags, time.Now()
		}
	}
	for _, l := range c.lags {
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(l.lag), l.topic, strconv.Itoa(int(l.partition)))
	}
	if !c.got.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, time.Since(c.got).Seconds())
	}
	c.errors.Collect(ch)
}

// ask asks the brokers for the lag of this instance's partitions.
func (c *LagCollector) ask() ([]partitionLag, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.Timeout)
	defer cancel()
	all, err := c.adm.Lag(ctx, c.group)
	if err != nil {
		return nil, err
	}
	g, ok := all[c.group]
	if !ok {
		return nil, nil
	}
	if err := g.Error(); err != nil {
		return nil, err
	}
	var out []partitionLag
	for topic, ps := range g.Lag {
		for p, l := range ps {
			if l.Member == nil || l.Member.InstanceID == nil || *l.Member.InstanceID != c.instance || l.Err != nil || l.Lag < 0 {
				continue
			}
			out = append(out, partitionLag{topic: topic, partition: p, lag: l.Lag})
		}
	}
	return out, nil
}
