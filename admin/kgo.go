package admin

import (
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
)

// kgoHooks feeds the franz-go clients' events into kprom's metrics,
// registered once on kdedup's registry as kdedup_kgo_* (connects, read and
// write bytes and errors per broker; produced and fetched bytes, batches
// and records per broker and topic).
//
// kprom is made for one client: each new client it sees registers a fresh
// set of metrics (a second client alive at the same time panics on the
// duplicate registration) and each closed client unregisters them.
// kdedup's processor makes many clients, several alive at once (the group
// session, restores, the fencing and leaving clients), and rebuilds them
// after failures. So the set is made once, here, and every client's
// events add to it: kgoHooks forwards the per-event hooks and keeps
// OnNewClient and OnClientClosed from kprom. kprom's buffered_* gauges,
// which read one client, are not registered (bufferedFilter).
type kgoHooks struct{ m *kprom.Metrics }

var (
	_ kgo.HookBrokerConnect       = kgoHooks{}
	_ kgo.HookBrokerDisconnect    = kgoHooks{}
	_ kgo.HookBrokerThrottle      = kgoHooks{}
	_ kgo.HookBrokerE2E           = kgoHooks{}
	_ kgo.HookProduceBatchWritten = kgoHooks{}
	_ kgo.HookFetchBatchRead      = kgoHooks{}
)

// kgoNamespace and kgoSubsystem name the client metrics kdedup_kgo_*.
const (
	kgoNamespace = "kdedup"
	kgoSubsystem = "kgo"
)

func newKgoHooks(reg prometheus.Registerer) kgoHooks {
	m := kprom.NewMetrics(kgoNamespace,
		kprom.Subsystem(kgoSubsystem),
		kprom.Registerer(bufferedFilter{reg}),
		kprom.FetchAndProduceDetail(kprom.ByNode, kprom.ByTopic, kprom.Batches, kprom.Records, kprom.UncompressedBytes),
	)
	// Creates and registers the metrics. The client is only read by the
	// client_id label (not asked for) and by the buffered_* gauges (not
	// registered, never collected).
	m.OnNewClient(nil)
	return kgoHooks{m}
}

func (h kgoHooks) OnBrokerConnect(meta kgo.BrokerMetadata, d time.Duration, c net.Conn, err error) {
	h.m.OnBrokerConnect(meta, d, c, err)
}

func (h kgoHooks) OnBrokerDisconnect(meta kgo.BrokerMetadata, c net.Conn) {
	h.m.OnBrokerDisconnect(meta, c)
}

func (h kgoHooks) OnBrokerThrottle(meta kgo.BrokerMetadata, d time.Duration, after bool) {
	h.m.OnBrokerThrottle(meta, d, after)
}

func (h kgoHooks) OnBrokerE2E(meta kgo.BrokerMetadata, key int16, e2e kgo.BrokerE2E) {
	h.m.OnBrokerE2E(meta, key, e2e)
}

func (h kgoHooks) OnProduceBatchWritten(meta kgo.BrokerMetadata, topic string, p int32, m kgo.ProduceBatchMetrics) {
	h.m.OnProduceBatchWritten(meta, topic, p, m)
}

func (h kgoHooks) OnFetchBatchRead(meta kgo.BrokerMetadata, topic string, p int32, m kgo.FetchBatchMetrics) {
	h.m.OnFetchBatchRead(meta, topic, p, m)
}

// bufferedFilter registers on reg every collector but kprom's buffered_*
// gauges, which read the one client kprom was made for.
type bufferedFilter struct{ reg prometheus.Registerer }

func (f bufferedFilter) buffered(c prometheus.Collector) bool {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	skip := false
	for d := range ch {
		skip = skip || strings.Contains(d.String(), `"`+kgoNamespace+"_"+kgoSubsystem+"_buffered_")
	}
	return skip
}

func (f bufferedFilter) Register(c prometheus.Collector) error {
	if f.buffered(c) {
		return nil
	}
	return f.reg.Register(c)
}

func (f bufferedFilter) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := f.Register(c); err != nil {
			panic(err)
		}
	}
}

func (f bufferedFilter) Unregister(c prometheus.Collector) bool { return f.reg.Unregister(c) }
