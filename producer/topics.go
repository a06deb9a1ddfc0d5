package producer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// StreamTopics names one stream's input and output.
type StreamTopics struct {
	Input, Output string
}

// TopicPlan is every topic a processor reads or writes.
type TopicPlan struct {
	Streams []StreamTopics
	// Audit is the audit topic, created with the largest input partition
	// count.
	Audit string
	// CreateInputs, when > 0, creates missing input topics with this many
	// partitions (the embedded broker, where nobody else would); when 0, a
	// missing input is waited for.
	CreateInputs int32
}

// Partitions maps topic names to partition counts.
type Partitions map[string]int32

// ErrBrokers is wrapped by EnsureTopics when the brokers do not answer.
var ErrBrokers = errors.New("producer: brokers did not answer")

// EnsureTopics makes every topic of the plan exist and returns the
// partition counts of all of them. Missing outputs are created with their
// input's partition count and the broker's default replication factor;
// topics that exist are used as they are. It never relies on the broker's
// auto-creation.
//
// Requests that fail are retried with exponential backoff (100ms doubling
// to 5s) until timeout, after which the error names the brokers. A missing
// input (when CreateInputs is 0) is waited for until ctx ends, logged every
// retry.
func EnsureTopics(ctx context.Context, adm *kadm.Client, plan TopicPlan, brokers []string, timeout time.Duration, log zerolog.Logger) (Partitions, error) {
	var inputs []string
	for _, s := range plan.Streams {
		inputs = append(inputs, s.Input)
	}
	parts := Partitions{}
	deadline := time.Now().Add(timeout)
	backoff := 100 * time.Millisecond
	wait := func(what string, err error) error {
		if err != nil && time.Now().After(deadline) {
			return fmt.Errorf("%w: %s: %s after %v: %w", ErrBrokers, strings.Join(brokers, ","), what, timeout, err)
		}
		ev := log.Warn()
		if err == nil {
			ev = log.Info()
		}
		ev.Err(err).Dur("retry_in", backoff).Msg(what)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
		return nil
	}

	// The inputs: their partition counts decide everything else.
	for {
		details, err := listTopics(ctx, adm, inputs...)
		if err != nil {
			if werr := wait("listing input topics", err); werr != nil {
				return nil, werr
			}
			continue
		}
		var missing []string
		for _, in := range inputs {
			if n, ok := details[in]; ok {
				parts[in] = n
			} else {
				missing = append(missing, in)
			}
		}
		if len(missing) == 0 {
			break
		}
		if plan.CreateInputs > 0 {
			created, err := create(ctx, adm, plan.CreateInputs, missing...)
			for _, t := range created {
				parts[t] = plan.CreateInputs
			}
			if len(created) == len(missing) {
				break
			}
			if werr := wait("creating input topics", err); werr != nil {
				return nil, werr
			}
			continue
		}
		// Waiting for a topic someone else creates is not a broker
		// failure: no deadline.
		deadline = time.Now().Add(timeout)
		if werr := wait("waiting for input topics "+strings.Join(missing, ","), nil); werr != nil {
			return nil, werr
		}
	}

	want := map[string]int32{}
	var auditParts int32 = 1
	for _, s := range plan.Streams {
		want[s.Output] = parts[s.Input]
		auditParts = max(auditParts, parts[s.Input])
	}
	if plan.Audit != "" {
		want[plan.Audit] = auditParts
	}
	for {
		var names []string
		for t := range want {
			names = append(names, t)
		}
		details, err := listTopics(ctx, adm, names...)
		if err != nil {
			if werr := wait("listing output topics", err); werr != nil {
				return nil, werr
			}
			continue
		}
		byCount := map[int32][]string{}
		for t, n := range want {
			if have, ok := details[t]; ok {
				parts[t] = have
				delete(want, t)
				if have != n {
					log.Info().Str("topic", t).Int32("partitions", have).Int32("input_partitions", n).Msg("output topic exists with another partition count; records are partitioned by key")
				}
				continue
			}
			byCount[n] = append(byCount[n], t)
		}
		var cerr error
		for n, ts := range byCount {
			log.Info().Strs("topics", ts).Int32("partitions", n).Msg("creating topics")
			created, err := create(ctx, adm, n, ts...)
			if err != nil {
				cerr = err
			}
			// The create response is the truth: the client's cached
			// metadata may not show a new topic for a while.
			for _, t := range created {
				parts[t] = n
				delete(want, t)
			}
		}
		if len(want) == 0 {
			return parts, nil
		}
		// Left: topics another instance created meanwhile (listed on
		// the next round) or a failed create.
		if werr := wait("creating output topics", cerr); werr != nil {
			return nil, werr
		}
	}
}

// listTopics returns the partition counts of the named topics that exist.
// It asks for every topic: a request naming a missing topic would be
// retried by the client until it timed out.
func listTopics(ctx context.Context, adm *kadm.Client, topics ...string) (map[string]int32, error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	all, err := adm.ListTopics(rctx)
	if err != nil {
		return nil, err
	}
	out := map[string]int32{}
	for _, t := range topics {
		d, ok := all[t]
		if !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
			continue
		}
		if d.Err != nil {
			return nil, fmt.Errorf("topic %s: %w", d.Topic, d.Err)
		}
		if len(d.Partitions) > 0 {
			out[d.Topic] = int32(len(d.Partitions))
		}
	}
	return out, nil
}

// create creates topics with n partitions and the broker's default
// replication factor and returns those it created. A topic that already
// exists (another instance won the race) is neither created nor an error.
func create(ctx context.Context, adm *kadm.Client, n int32, topics ...string) (created []string, err error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resps, err := adm.CreateTopics(rctx, n, -1, nil, topics...)
	if err != nil {
		return nil, err
	}
	for _, r := range resps {
		switch {
		case r.Err == nil:
			created = append(created, r.Topic)
		case errors.Is(r.Err, kerr.TopicAlreadyExists):
		default:
			err = fmt.Errorf("creating topic %s: %w", r.Topic, r.Err)
		}
	}
	return created, err
}

// DefaultMaxMessageBytes is the batch size used for a topic whose
// max.message.bytes is not known: franz-go's default, just under Kafka's
// 1MiB.
const DefaultMaxMessageBytes = 1000012

// MaxMessageBytes returns the max.message.bytes of each of topics: the
// largest record batch each accepts. Producer batches are sized to it per
// topic, so that only a record that is itself too large is refused, never
// a batch of small ones.
func MaxMessageBytes(ctx context.Context, adm *kadm.Client, topics ...string) (map[string]int32, error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rcs, err := adm.DescribeTopicConfigs(rctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("describing topic configs: %w", err)
	}
	out := map[string]int32{}
	for _, rc := range rcs {
		if rc.Err != nil {
			return nil, fmt.Errorf("describing %s: %w", rc.Name, rc.Err)
		}
		for _, c := range rc.Configs {
			if c.Key != "max.message.bytes" || c.Value == nil {
				continue
			}
			var n int32
			if _, err := fmt.Sscan(*c.Value, &n); err == nil && n > 0 {
				out[rc.Name] = n
			}
		}
	}
	return out, nil
}
