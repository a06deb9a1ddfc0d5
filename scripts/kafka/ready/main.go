// Command ready waits until a test Kafka cluster is usable; scripts/kafka.sh
// runs it after starting brokers.
//
//	ready -brokers a,b,c -nodes 3   every node registered and a topic of
//	                                replication factor 3 can be created
//	ready -brokers a,b,c -node 2    node 2 registered (after a restart)
//	ready -brokers a,b,c -isr       every partition's ISR is all its replicas
//
// It exits 0 when the condition holds, 1 on timeout with the last reason.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	brokers := flag.String("brokers", "", "comma-separated seed brokers")
	nodes := flag.Int("nodes", 0, "wait for this many registered brokers and create a topic with this replication factor")
	node := flag.Int("node", 0, "wait for this node id to be registered")
	isr := flag.Bool("isr", false, "wait for every partition's ISR to hold all its replicas")
	timeout := flag.Duration("timeout", 2*time.Minute, "give up after")
	flag.Parse()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(*brokers, ",")...))
	if err != nil {
		fmt.Fprintln(os.Stderr, "ready:", err)
		os.Exit(1)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	check := func() error {
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		defer rcancel()
		m, err := adm.Metadata(rctx)
		if err != nil {
			return err
		}
		ids := m.Brokers.NodeIDs()
		if len(ids) < *nodes {
			return fmt.Errorf("%d of %d brokers registered: %v", len(ids), *nodes, ids)
		}
		if *node != 0 && !slices.Contains(ids, int32(*node)) {
			return fmt.Errorf("node %d not registered (registered: %v)", *node, ids)
		}
		if *isr {
			for _, td := range m.Topics {
				for _, p := range td.Partitions {
					if p.Err != nil || p.Leader < 0 || len(p.ISR) < len(p.Replicas) {
						return fmt.Errorf("%s/%d: leader %d, replicas %v, isr %v, err %v", p.Topic, p.Partition, p.Leader, p.Replicas, p.ISR, p.Err)
					}
				}
			}
		}
		if *nodes > 0 {
			// Registered is not yet usable: a topic of replication
			// factor nodes proves the controller places replicas on all.
			topic := "kdedup-ready-" + strconv.FormatInt(time.Now().UnixNano(), 36)
			resp, err := adm.CreateTopic(rctx, 1, int16(*nodes), nil, topic)
			if err == nil {
				err = resp.Err
			}
			if err != nil {
				return fmt.Errorf("creating a topic of replication factor %d: %w", *nodes, err)
			}
			if _, err := adm.DeleteTopics(rctx, topic); err != nil {
				return fmt.Errorf("deleting %s: %w", topic, err)
			}
		}
		return nil
	}
	for {
		err := check()
		if err == nil {
			return
		}
		if ctx.Err() != nil || errors.Is(err, context.Canceled) {
			fmt.Fprintf(os.Stderr, "ready: not ready within %v: %v\n", *timeout, err)
			os.Exit(1)
		}
		time.Sleep(500 * time.Millisecond) // polling: the cluster gives no signal
	}
}
