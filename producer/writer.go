package producer

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/dedup"
)

// Client is what a Writer produces through: franz-go's Produce, on a
// client whose transaction (if any) is open.
type Client interface {
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
}

// Coord names an input record: the partition it was consumed from and its
// offset there.
type Coord struct {
	Topic     string
	Partition int32
	Offset    int64
}

// Stream is what a Writer needs of one deduplicated stream.
type Stream struct {
	// Name is the stream's name (dedup.stream).
	Name string
	// Output receives its first-seen records; OutputPartitions and
	// InputPartitions are the partition counts of the output and of the
	// input (OutputPartition).
	Output           string
	OutputPartitions int32
	InputPartitions  int32
	// Repartition, if set, is the topic the input is re-keyed into
	// (Forward), with RepartitionPartitions partitions.
	Repartition           string
	RepartitionPartitions int32
}

// WriterOptions configure a Writer.
type WriterOptions struct {
	// AuditTopic receives every record that is not first-seen;
	// AuditPartitions is its partition count.
	AuditTopic      string
	AuditPartitions int32
	// ChangelogTopic receives the state changes (Changelog), with
	// ChangelogPartitions partitions. Empty: none are written, and
	// Changelog does nothing.
	ChangelogTopic      string
	ChangelogPartitions int32
	// Limits is what each topic refuses (TopicLimits). A topic not in it
	// has the zero Limits: nothing predicted.
	Limits map[string]Limits
}

// Writer produces the records of one processor's transactions: output
// and audit records of decided input records, repartition records, and
// changelog records. It remembers what a topic refused, so that the
// retry after the abort routes such a record to the audit (or repairs
// its audit record) instead of failing again forever, and it collects
// the first failure of the open transaction, which must then abort.
//
// Concurrency: Decided, Forward, Changelog and Reset are called from the
// processing goroutine; the produce promises run on the client's
// goroutines. The failure and the refusal memory are guarded by mu, the
// failed flag is atomic so that the hot path reads it without locking.
type Writer struct {
	opts WriterOptions

	failed   atomic.Bool
	nRefused atomic.Int64 // len(refusals), so that the hot path skips mu while there are none
	mu       sync.Mutex
	err      error                // the open transaction's first failure
	refusals map[refusalKey]error // refused records, until their offset commits (Forget)
}

type refusalKey struct {
	Coord
	audit bool // the record refused was the audit record
}

// NewWriter returns a Writer.
func NewWriter(opts WriterOptions) *Writer {
	return &Writer{opts: opts, refusals: map[refusalKey]error{}}
}

// Decided produces the result of the input record in, consumed at at and
// decided d in stream s: a first-seen record goes to s's output (or, if
// the output refused it before or its limits say it would, to the audit
// as refused), every other decision to the audit.
func (w *Writer) Decided(ctx context.Context, c Client, s *Stream, at Coord, in *kgo.Record, d *dedup.Decision) {
	now := time.Now()
	var out *kgo.Record
	if d.Reason == dedup.FirstSeen {
		out = Output(in, s.Output, s.OutputPartitions, s.InputPartitions)
		if err := w.refusal(at, out, now); err != nil {
			out = Refused(in, w.opts.AuditTopic, w.opts.AuditPartitions, s.Name, s.Output, d, err)
		}
	} else {
		out = Audit(in, w.opts.AuditTopic, w.opts.AuditPartitions, s.Name, d)
	}
	w.produce(ctx, c, at, w.repaired(at, out, len(in.Headers), now), len(in.Headers))
}

// Forward produces input record in of stream s, consumed at at, to
// partition part of s's repartition topic; if that topic refused it
// before or would, the record is audited, undecided, as refused by it.
func (w *Writer) Forward(ctx context.Context, c Client, s *Stream, at Coord, in *kgo.Record, part int32) {
	now := time.Now()
	out := Forward(in, s.Repartition, part)
	if err := w.refusal(at, out, now); err != nil {
		out = w.repaired(at, Refused(in, w.opts.AuditTopic, w.opts.AuditPartitions, s.Name, s.Repartition, &dedup.Decision{}, err), len(in.Headers), now)
	}
	w.produce(ctx, c, at, out, len(in.Headers))
}

// Changelog produces a changelog record of the state of input partition
// topic/partition (key and value from package state), with timestamp ts
// (Unix milliseconds; 0: the producer's clock) and headers hs; written, if
// not nil, is called (on a client goroutine) with the offset after the
// record once the broker took it. A failure fails the transaction.
// Nothing is produced without a changelog topic.
func (w *Writer) Changelog(ctx context.Context, c Client, topic string, partition int32, key, value []byte, ts int64, hs []kgo.RecordHeader, written func(next int64)) {
	if w.opts.ChangelogTopic == "" {
		return
	}
	r := Changelog(w.opts.ChangelogTopic, w.opts.ChangelogPartitions, partition, key, value)
	if ts != 0 {
		r.Timestamp = time.UnixMilli(ts)
	}
	r.Headers = hs
	c.Produce(context.WithoutCancel(ctx), r, func(r *kgo.Record, err error) {
		if err != nil {
			w.Fail(fmt.Errorf("writing the changelog of %s/%d: %w", topic, partition, err))
			return
		}
		if written != nil {
			written(r.Offset + 1)
		}
	})
}

// Forgotten produces the audit record of an admin forget of key, scoped
// by scope, in stream: entry e, stored for input partition e.Partition,
// is removed from the state in the same transaction (Forgotten, the
// record builder). A failure fails the transaction.
func (w *Writer) Forgotten(ctx context.Context, c Client, stream string, statePartition int32, key []byte, scope []string, e *dedup.Entry) {
	r := Forgotten(w.opts.AuditTopic, w.opts.AuditPartitions, stream, statePartition, key, scope, e, time.Now())
	c.Produce(context.WithoutCancel(ctx), r, func(_ *kgo.Record, err error) {
		if err != nil {
			w.Fail(fmt.Errorf("writing the audit record of forgetting key %q of %s: %w", key, stream, err))
		}
	})
}

// Changelogs reports whether the Writer writes a changelog.
func (w *Writer) Changelogs() bool { return w.opts.ChangelogTopic != "" }

// produce produces out, the record written for the input record at at,
// whose first own headers are the input's. A refusal of out for what it is
// is remembered (see Writer), added to those of out's earlier forms: an
// audit record refused as too large once cut (Repaired) is cut further
// the next time.
func (w *Writer) produce(ctx context.Context, c Client, at Coord, out *kgo.Record, own int) {
	isAudit := out.Topic == w.opts.AuditTopic
	// Not ctx: a shutdown must finish the open transaction (End commits
	// it), not fail its records half way, which would leave an abort the
	// broker may never see.
	c.Produce(context.WithoutCancel(ctx), out, func(_ *kgo.Record, err error) {
		if err == nil {
			return
		}
		if Refusal(err) && w.opts.Limits[out.Topic].Culprit(out, err, time.Now()) {
			level := 0
			if isAudit {
				level = cutLevel(out, own)
			}
			w.mu.Lock()
			k := refusalKey{at, isAudit}
			w.refusals[k] = addRefusal(w.refusals[k], err, level)
			w.nRefused.Store(int64(len(w.refusals)))
			w.mu.Unlock()
			err = fmt.Errorf("%s refused the record of %s/%d/%d: %w", out.Topic, at.Topic, at.Partition, at.Offset, err)
		}
		w.Fail(err)
	})
}

// refusal returns why out, the record produced for the input at at, will
// be refused: the refusals met before, and one its topic's limits
// predict; nil if none.
func (w *Writer) refusal(at Coord, out *kgo.Record, now time.Time) error {
	predicted := w.opts.Limits[out.Topic].Refuses(out, now)
	if w.nRefused.Load() > 0 {
		w.mu.Lock()
		err := w.refusals[refusalKey{at, out.Topic == w.opts.AuditTopic}]
		w.mu.Unlock()
		if err != nil && predicted != nil {
			return addRefusal(err, predicted, 0)
		}
		if err != nil {
			return err
		}
	}
	return predicted
}

// repaired returns out, or, for an audit record (whose first own headers
// are the input's) its topic refused before or would refuse, what the
// audit topic can take (Repaired).
func (w *Writer) repaired(at Coord, out *kgo.Record, own int, now time.Time) *kgo.Record {
	if out.Topic != w.opts.AuditTopic {
		return out
	}
	if err := w.refusal(at, out, now); err != nil {
		return Repaired(out, own, err, now, w.opts.Limits[out.Topic].maxBytes())
	}
	return out
}

// Forget drops the refusals of the records of topic/partition below
// next, its committed offset: those records are decided (or forwarded)
// for good.
func (w *Writer) Forget(topic string, partition int32, next int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k := range w.refusals {
		if k.Topic == topic && k.Partition == partition && k.Offset < next {
			delete(w.refusals, k)
		}
	}
	w.nRefused.Store(int64(len(w.refusals)))
}

// Fail marks the open transaction as failed by err: it must abort. The
// first failure is kept.
func (w *Writer) Fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
	w.failed.Store(true)
}

// Failed reports whether the open transaction failed.
func (w *Writer) Failed() bool { return w.failed.Load() }

// Err returns the open transaction's first failure, nil if none.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Reset forgets the failure: the transaction is over (or its session
// is). Refusals stay until Forget.
func (w *Writer) Reset() {
	w.mu.Lock()
	w.err = nil
	w.mu.Unlock()
	w.failed.Store(false)
}
