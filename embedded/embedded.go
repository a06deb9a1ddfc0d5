// Package embedded runs franz-go's in-process Kafka-protocol broker (kfake)
// for kdedup's zero-setup default: with no brokers configured, kdedup serves
// Kafka itself on 127.0.0.1:9092, keeping the broker's data under state_dir
// so that it survives restarts. It is one broker with no replication: for
// trying kdedup and for tests, not for production.
package embedded

import (
	"fmt"
	"os"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"
)

// DefaultPort is where the embedded broker listens.
const DefaultPort = 9092

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
