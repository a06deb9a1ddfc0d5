// Package embedded runs franz-go's in-process Kafka-protocol broker (kfake)
// for kdedup's zero-setup default: with no brokers configured, kdedup serves
// Kafka itself on 127.0.0.1:9092, keeping the broker's data under state_dir
// so that it survives restarts. It is one broker with no replication: for
// trying kdedup and for tests, not for production.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultPort is where the embedded broker listens.
const DefaultPort = 9092

// neverMs is the compaction timer's interval: a century, in effect never
// (a larger value would overflow the timer's nanoseconds).
const neverMs = "3153600000000"

// Broker is a running embedded broker.
type Broker struct {
	c *kfake.Cluster
}

// Start starts the broker on 127.0.0.1:port with its data in dir. Topics
// are auto-created on first produce with partitions partitions (Kafka's
// own default behaviour, convenient for kcat); kdedup itself never relies
// on that and creates its topics explicitly.
//
// Writes go to the operating system without fsync, as Kafka's default does:
// a killed process loses nothing, a machine crash may lose the last writes.
//
// The broker never compacts: kfake's compaction, unlike Apache Kafka's
// cleaner, which stops at the last stable offset, runs past open
// transactions (a record of a transaction still open removes the
// committed record of its key; if the transaction then aborts, the key is
// gone from kdedup's changelog), and it is not crash-safe (it deletes a
// partition's segment files before it writes their compacted copies, and
// a kill of kdedup kills the broker inside it). So kdedup's changelog on
// the embedded broker keeps every record and grows until state_dir is
// cleared: for trying kdedup, not for running it for months.
func Start(dir string, port int, partitions int, log zerolog.Logger) (*Broker, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("embedded broker data dir: %w", err)
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.DataDir(dir),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(partitions),
		kfake.WithLogger(logger{log}),
		kfake.BrokerConfigs(map[string]string{"log.cleaner.backoff.ms": neverMs}),
	)
	if err != nil {
		return nil, fmt.Errorf("starting embedded broker on 127.0.0.1:%d: %w", port, err)
	}
	return &Broker{c: c}, nil
}

// Addrs returns the broker's listen addresses.
func (b *Broker) Addrs() []string { return b.c.ListenAddrs() }

// Close stops the broker, persisting its state.
func (b *Broker) Close() { b.c.Close() }

type logger struct{ l zerolog.Logger }

func (l logger) Logf(level kfake.LogLevel, msg string, args ...any) {
	switch level {
	case kfake.LogLevelError:
		l.l.Error().Str("component", "broker").Msgf(msg, args...)
	case kfake.LogLevelWarn:
		l.l.Warn().Str("component", "broker").Msgf(msg, args...)
	default:
		l.l.Debug().Str("component", "broker").Msgf(msg, args...)
	}
}

// EndCrashedTransactions closes, on every partition of topics, any
// transaction of transactional id txnID that a kill of this process left
// open in the embedded broker.
//
// Why: after an unclean stop, kfake's reload treats a transaction it finds
// open as aborted but writes no ABORT marker into the log. A read_committed
// reader drops a producer's batches from the start of an aborted
// transaction until it reads that producer's abort marker, and kdedup keeps
// its producer id across restarts (only the epoch moves): without a marker,
// every later record kdedup writes would stay invisible. Apache Kafka's
// coordinator always writes the markers; this is for the embedded broker
// only. An abort marker on a partition with no open transaction is skipped
// by every reader.
//
// It initialises the transactional id first, which fences (aborts) a
// transaction still open the ordinary way, then writes the markers with
// the producer id and epoch it got.
func EndCrashedTransactions(ctx context.Context, brokers []string, txnID string, topics map[string]int32) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID(txnID))
	if err != nil {
		return err
	}
	defer cl.Close()
	id, epoch, err := cl.ProducerID(ctx)
	if err != nil {
		return fmt.Errorf("initialising %s: %w", txnID, err)
	}
	m := kadm.TxnMarkers{ProducerID: id, ProducerEpoch: epoch, Commit: false, Topics: kadm.TopicsSet{}}
	for t, n := range topics {
		for p := int32(0); p < n; p++ {
			m.Topics.Add(t, p)
		}
	}
	resps, err := kadm.NewClient(cl).WriteTxnMarkers(ctx, m)
	if err != nil {
		return fmt.Errorf("writing abort markers for %s: %w", txnID, err)
	}
	var errs []error
	for _, r := range resps {
		r.Topics.EachPartition(func(p kadm.TxnMarkersPartitionResponse) {
			if p.Err != nil {
				errs = append(errs, fmt.Errorf("%s/%d: %w", p.Topic, p.Partition, p.Err))
			}
		})
	}
	return errors.Join(errs...)
}
