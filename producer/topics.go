package producer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// StreamTopics names one stream's input and output.
type StreamTopics struct {
	Input, Output string
	// Repartition is the stream's repartition topic, created with the
	// input's partition count; empty: none.
	Repartition string
}

// TopicPlan is every topic a processor reads or writes.
type TopicPlan struct {
	Streams []StreamTopics
	// Audit is the audit topic, created with the largest input partition
	// count.
	Audit string
	// Changelog is the changelog topic, created like the audit topic and
	// compacted (cleanup.policy=compact): the latest record of each key is
	// all a restore needs, and tombstones take expired keys out. Empty:
	// none.
	Changelog string
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
	e := &topicEnsurer{
		adm: adm, plan: plan, brokers: brokers, timeout: timeout, log: log,
		parts: Partitions{}, deadline: time.Now().Add(timeout), backoff: 100 * time.Millisecond,
	}
	// The inputs: their partition counts decide everything else.
	if err := e.inputs(ctx); err != nil {
		return nil, err
	}
	if err := e.outputs(ctx, e.wanted()); err != nil {
		return nil, err
	}
	return e.parts, nil
}

// topicEnsurer is one run of EnsureTopics: the partition counts found so
// far and the retry state its steps share, one deadline and one backoff
// for the whole run, so that the timeout bounds it as a whole rather than
// each step (only waiting for inputs, not a broker failure, moves the
// deadline).
type topicEnsurer struct {
	adm     *kadm.Client
	plan    TopicPlan
	brokers []string
	timeout time.Duration
	log     zerolog.Logger

	parts    Partitions
	deadline time.Time     // when a failing request is given up
	backoff  time.Duration // the next retry's delay
}

// wait logs what is being retried and sleeps out the backoff, doubling it
// up to 5s. A failure (err) past the deadline is not retried: the error
// names the brokers, for an operator to check them.
func (e *topicEnsurer) wait(ctx context.Context, what string, err error) error {
	if err != nil && time.Now().After(e.deadline) {
		return fmt.Errorf("%w: %s: %s after %v: %w", ErrBrokers, strings.Join(e.brokers, ","), what, e.timeout, err)
	}
	ev := e.log.Warn()
	if err == nil {
		ev = e.log.Info()
	}
	ev.Err(err).Dur("retry_in", e.backoff).Msg(what)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(e.backoff):
	}
	e.backoff = min(2*e.backoff, 5*time.Second)
	return nil
}

// inputs records the partition counts of the plan's inputs, creating
// missing ones when the plan says so (CreateInputs) and otherwise waiting
// for them.
func (e *topicEnsurer) inputs(ctx context.Context) error {
	var inputs []string
	for _, s := range e.plan.Streams {
		inputs = append(inputs, s.Input)
	}
	for {
		details, err := listTopics(ctx, e.adm, inputs...)
		if err != nil {
			if werr := e.wait(ctx, "listing input topics", err); werr != nil {
				return werr
			}
			continue
		}
		var missing []string
		for _, in := range inputs {
			if n, ok := details[in]; ok {
				e.parts[in] = n
			} else {
				missing = append(missing, in)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if e.plan.CreateInputs > 0 {
			created, err := create(ctx, e.adm, e.plan.CreateInputs, nil, missing...)
			for _, t := range created {
				e.parts[t] = e.plan.CreateInputs
			}
			if len(created) == len(missing) {
				return nil
			}
			if werr := e.wait(ctx, "creating input topics", err); werr != nil {
				return werr
			}
			continue
		}
		// Waiting for a topic someone else creates is not a broker
		// failure: no deadline.
		e.deadline = time.Now().Add(e.timeout)
		if werr := e.wait(ctx, "waiting for input topics "+strings.Join(missing, ","), nil); werr != nil {
			return werr
		}
	}
}

// wanted returns the partition count each output, repartition, audit and
// changelog topic is created with: its input's for a stream's topics, the
// largest input's for the audit and the changelog.
func (e *topicEnsurer) wanted() map[string]int32 {
	want := map[string]int32{}
	var auditParts int32 = 1
	for _, s := range e.plan.Streams {
		want[s.Output] = e.parts[s.Input]
		if s.Repartition != "" {
			want[s.Repartition] = e.parts[s.Input]
		}
		auditParts = max(auditParts, e.parts[s.Input])
	}
	if e.plan.Audit != "" {
		want[e.plan.Audit] = auditParts
	}
	if e.plan.Changelog != "" {
		want[e.plan.Changelog] = auditParts
	}
	return want
}

// outputs makes the topics of want exist, recording their partition
// counts, until none is left: each round lists them, takes those that
// exist as they are and creates the others.
func (e *topicEnsurer) outputs(ctx context.Context, want map[string]int32) error {
	for {
		var names []string
		for t := range want {
			names = append(names, t)
		}
		details, err := listTopics(ctx, e.adm, names...)
		if err != nil {
			if werr := e.wait(ctx, "listing output topics", err); werr != nil {
				return werr
			}
			continue
		}
		byCount, changelogParts := e.existing(details, want)
		cerr := e.createOutputs(ctx, want, byCount, changelogParts)
		if len(want) == 0 {
			return nil
		}
		// Left: topics another instance created meanwhile (listed on
		// the next round) or a failed create.
		if werr := e.wait(ctx, "creating output topics", cerr); werr != nil {
			return werr
		}
	}
}

// existing takes the topics of want that details lists out of want,
// recording their partition counts, and sorts the missing ones by the
// partition count they are to be created with. The changelog is left out
// of byCount: changelogParts > 0 says it is missing.
func (e *topicEnsurer) existing(details, want map[string]int32) (byCount map[int32][]string, changelogParts int32) {
	byCount = map[int32][]string{}
	for t, n := range want {
		if have, ok := details[t]; ok {
			e.parts[t] = have
			delete(want, t)
			if have != n {
				e.log.Info().Str("topic", t).Int32("partitions", have).Int32("input_partitions", n).Msg("output topic exists with another partition count; records are partitioned by key")
			}
			continue
		}
		if t == e.plan.Changelog {
			changelogParts = n // created alone: it has its own configs
			continue
		}
		byCount[n] = append(byCount[n], t)
	}
	return byCount, changelogParts
}

// createOutputs creates the missing changelog (compacted), when
// changelogParts > 0, and the topics of byCount, taking those it created
// out of want. It returns the last error of a create, for the retry.
func (e *topicEnsurer) createOutputs(ctx context.Context, want map[string]int32, byCount map[int32][]string, changelogParts int32) error {
	var cerr error
	if changelogParts > 0 {
		e.log.Info().Str("topic", e.plan.Changelog).Int32("partitions", changelogParts).Msg("creating the changelog topic (compacted)")
		compact := "compact"
		created, err := create(ctx, e.adm, changelogParts, map[string]*string{"cleanup.policy": &compact}, e.plan.Changelog)
		if err != nil {
			cerr = err
		}
		for _, t := range created {
			e.parts[t] = changelogParts
			delete(want, t)
		}
	}
	for n, ts := range byCount {
		e.log.Info().Strs("topics", ts).Int32("partitions", n).Msg("creating topics")
		created, err := create(ctx, e.adm, n, nil, ts...)
		if err != nil {
			cerr = err
		}
		// The create response is the truth: the client's cached
		// metadata may not show a new topic for a while.
		for _, t := range created {
			e.parts[t] = n
			delete(want, t)
		}
	}
	return cerr
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
func create(ctx context.Context, adm *kadm.Client, n int32, configs map[string]*string, topics ...string) (created []string, err error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resps, err := adm.CreateTopics(rctx, n, -1, configs, topics...)
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

// Limits is what a topic refuses by its configuration, so that kdedup can
// route a record the topic would refuse before producing it: a refused
// record fails its whole producer batch, and with it every other record of
// the batch.
type Limits struct {
	// MaxMessageBytes is the topic's max.message.bytes: the largest record
	// batch it accepts. Producer batches are sized to it, so that only a
	// record that is itself too large is refused. 0: unknown, and
	// DefaultMaxMessageBytes is used.
	MaxMessageBytes int32
	// TimestampBefore and TimestampAfter bound how far a record's
	// timestamp may be behind or ahead of the broker's clock
	// (message.timestamp.before.max.ms and after.max.ms; Apache Kafka 4
	// defaults the latter to one hour). 0: no bound, as under
	// message.timestamp.type LogAppendTime, where the broker stamps
	// records itself.
	TimestampBefore, TimestampAfter time.Duration
	// Compacted is a cleanup.policy with compact: the topic refuses
	// records without a key (INVALID_RECORD).
	Compacted bool
}

// RefusalMargin is how near a timestamp bound a record's timestamp must be
// for kdedup to blame a refused batch's INVALID_TIMESTAMP on it: the
// broker's clock and kdedup's may differ by this much.
const RefusalMargin = time.Minute

// Refuses returns the error the topic would refuse r with when the clock
// reads now — kerr.InvalidTimestamp, kerr.InvalidRecord or
// kerr.MessageTooLarge (a batch of r alone is larger than the topic's
// max.message.bytes, or than DefaultMaxMessageBytes when that is not
// known: the producer refuses it then) — or nil. Records it refuses are
// audited (ReasonRefused, ReasonTooLarge) without being produced: in a
// batch they would fail every record with them, and the producer refuses
// a record too large before sending it.
func (l Limits) Refuses(r *kgo.Record, now time.Time) error {
	switch {
	case !l.AcceptsTime(r.Timestamp, now, 0):
		return kerr.InvalidTimestamp
	case l.Compacted && r.Key == nil:
		return kerr.InvalidRecord
	case RecordBatchBytes(r) > l.maxBytes():
		return kerr.MessageTooLarge
	}
	return nil
}

// maxBytes is the largest record batch the topic is known to take: its
// max.message.bytes, or DefaultMaxMessageBytes, the producer's batch size
// when that is not known.
func (l Limits) maxBytes() int {
	if l.MaxMessageBytes > 0 {
		return int(l.MaxMessageBytes)
	}
	return DefaultMaxMessageBytes
}

// RecordBatchBytes returns the size of a record batch holding r alone,
// uncompressed: what a broker compares with a topic's max.message.bytes
// (61 bytes of batch header, then the record), and what franz-go compares
// with its batch size before it buffers r (plus the length prefix of the
// batch, which BatchBytes allows for). Compression never makes a record
// too large: franz-go sends a batch compressed only when that is smaller.
func RecordBatchBytes(r *kgo.Record) int {
	body := 3 // attributes; timestamp and offset deltas, 0 in a batch of one
	body += bytesLen(r.Key) + bytesLen(r.Value) + varintLen(len(r.Headers))
	for _, h := range r.Headers {
		body += varintLen(len(h.Key)) + len(h.Key) + bytesLen(h.Value)
	}
	return recordBatchHeader + varintLen(body) + body
}

// recordBatchHeader is the size of a record batch (magic 2) without its
// records: base offset, length, leader epoch, magic, CRC, attributes, last
// offset delta, first and max timestamp, producer id and epoch, base
// sequence and record count.
const recordBatchHeader = 8 + 4 + 4 + 1 + 4 + 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4

// varintLen is the size of n (>= 0) as a zig-zag varint.
func varintLen(n int) int {
	l := 1
	for u := uint64(n) << 1; u >= 0x80; u >>= 7 {
		l++
	}
	return l
}

// bytesLen is the size of b as varint-prefixed bytes; nil is a length of
// -1, one byte.
func bytesLen(b []byte) int {
	if b == nil {
		return 1
	}
	return varintLen(len(b)) + len(b)
}

// Culprit reports whether the refusal err (a Refusal) of the batch that
// carried r is r's own doing, judged at now: a broker refuses whole
// batches, innocent records with the guilty. A record too large always is
// (batches are sized so that it travels alone); an INVALID_TIMESTAMP is
// r's if r's timestamp is within RefusalMargin of a bound or past it, or
// if the topic has no bounds kdedup knows of; an INVALID_RECORD is r's if
// r has no key for a compacted topic, or if the topic is not known to be
// compacted.
func (l Limits) Culprit(r *kgo.Record, err error, now time.Time) bool {
	switch {
	case errors.Is(err, kerr.InvalidTimestamp):
		return (l.TimestampAfter == 0 && l.TimestampBefore == 0) || !l.AcceptsTime(r.Timestamp, now, RefusalMargin)
	case errors.Is(err, kerr.InvalidRecord):
		return !l.Compacted || r.Key == nil
	}
	return Refusal(err)
}

// BatchBytes returns the producer batch size for the topic: its
// max.message.bytes as franz-go counts a batch. franz-go counts the length
// prefix a produce request puts before the batch (a uvarint in the
// flexible versions every Kafka since 2.4 speaks, 4 bytes before), which
// the broker does not count against max.message.bytes: a batch size of
// max.message.bytes alone would refuse records up to 4 bytes smaller than
// the topic takes. With the prefix a batch of exactly max.message.bytes
// passes, and no larger one (in the older versions the limit is the prefix
// less: never too large either). Until franz-go knows a broker's produce
// version (its first produce request there), it counts 4 bytes of prefix:
// a record within a byte or two of the limit may then be refused by the
// client, and is audited too_large.
func (l Limits) BatchBytes() int32 {
	if l.MaxMessageBytes <= 0 {
		return DefaultMaxMessageBytes
	}
	n := int64(l.MaxMessageBytes)
	prefix := int64(1)
	for u := uint64(n) + 1; u >= 0x80; u >>= 7 {
		prefix++
	}
	return int32(min(n+prefix, math.MaxInt32))
}

// AcceptsTime reports whether the topic takes a record stamped ts when
// the broker's clock reads now, with margin to spare on either bound: a
// margin > 0 asks whether ts is clearly within the bounds, for clocks that
// differ.
func (l Limits) AcceptsTime(ts, now time.Time, margin time.Duration) bool {
	if l.TimestampAfter > 0 && ts.After(now.Add(l.TimestampAfter-margin)) {
		return false
	}
	if l.TimestampBefore > 0 && ts.Before(now.Add(-l.TimestampBefore+margin)) {
		return false
	}
	return true
}

// TopicLimits returns the Limits of each of topics from their
// configuration. A broker may not know a topic created a moment ago
// (Apache Kafka answers UNKNOWN_TOPIC_OR_PARTITION until its metadata
// catches up): that and failed requests are retried, 100ms doubling to
// 2s, until timeout.
func TopicLimits(ctx context.Context, adm *kadm.Client, timeout time.Duration, topics ...string) (map[string]Limits, error) {
	deadline := time.Now().Add(timeout)
	backoff := 100 * time.Millisecond
	for {
		out, err := topicLimits(ctx, adm, topics...)
		if err == nil || time.Now().After(deadline) {
			return out, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func topicLimits(ctx context.Context, adm *kadm.Client, topics ...string) (map[string]Limits, error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rcs, err := adm.DescribeTopicConfigs(rctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("describing topic configs: %w", err)
	}
	out := map[string]Limits{}
	for _, rc := range rcs {
		if rc.Err != nil {
			return nil, fmt.Errorf("describing %s: %w", rc.Name, rc.Err)
		}
		cfg := map[string]string{}
		for _, c := range rc.Configs {
			if c.Value != nil {
				cfg[c.Key] = *c.Value
			}
		}
		out[rc.Name] = limitsOf(cfg)
	}
	return out, nil
}

// limitsOf reads Limits from a topic's configuration.
func limitsOf(cfg map[string]string) Limits {
	var l Limits
	if n, err := strconv.ParseInt(cfg["max.message.bytes"], 10, 32); err == nil && n > 0 {
		l.MaxMessageBytes = int32(n)
	}
	l.Compacted = strings.Contains(cfg["cleanup.policy"], "compact")
	if cfg["message.timestamp.type"] == "LogAppendTime" {
		return l
	}
	ms := func(k string) (time.Duration, bool) {
		n, err := strconv.ParseInt(cfg[k], 10, 64)
		if err != nil {
			return 0, false
		}
		// Long.MAX_VALUE (the default of Kafka 3.6 to 3.9) and anything
		// past a century means no bound.
		if n <= 0 || n > 100*365*24*3600*1000 {
			return 0, true
		}
		return time.Duration(n) * time.Millisecond, true
	}
	// Kafka before 3.6 had one bound for both directions.
	if d, ok := ms("message.timestamp.difference.max.ms"); ok {
		l.TimestampBefore, l.TimestampAfter = d, d
	}
	if d, ok := ms("message.timestamp.before.max.ms"); ok {
		l.TimestampBefore = d
	}
	if d, ok := ms("message.timestamp.after.max.ms"); ok {
		l.TimestampAfter = d
	}
	return l
}
