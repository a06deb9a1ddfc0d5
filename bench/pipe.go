package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// PipeOptions shape RawPipe.
type PipeOptions struct {
	// Group is the consumer group; the transactional id is Group + "-raw"
	// and the static instance id "raw". Required.
	Group string
	// Inputs are the topics read, from their start when the group has no
	// committed offset. Required.
	Inputs []string
	// Output receives a copy of every input record in the input's
	// partition number: it needs at least as many partitions as any
	// input. Required.
	Output string
	// CommitInterval is how long one transaction collects records.
	// Default: 100ms, kdedup's default commit_interval.
	CommitInterval time.Duration
}

// pipeTimeouts are kdedup's: the transaction timeout below the session
// timeout.
const (
	pipeSessionTimeout = 45 * time.Second
	pipeTxnTimeout     = 30 * time.Second
	// pipePollRecords is what kdedup's processor takes a poll.
	pipePollRecords = 10_000
)

// validate reports every problem of o at once.
func (o PipeOptions) validate() error {
	var errs []error
	if o.Group == "" {
		errs = append(errs, errors.New("no group"))
	}
	if len(o.Inputs) == 0 {
		errs = append(errs, errors.New("no input topics"))
	}
	if o.Output == "" {
		errs = append(errs, errors.New("no output topic"))
	}
	if o.CommitInterval < 0 {
		errs = append(errs, fmt.Errorf("negative commit interval %v", o.CommitInterval))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("raw pipe: %w", err)
	}
	return nil
}

// RawPipe is the baseline kdedup is measured against: a transactional
// consume → produce loop with the client settings of kdedup's processor
// (read_committed, the manual partitioner, transactions fenced by group
// generation, up to 10,000 records a poll, one transaction per commit
// interval, the same session and transaction timeouts) that copies each
// input record (key, value, headers, timestamp) to o.Output in the same
// partition and decides nothing. opts reach the cluster: the seed brokers
// (kgo.SeedBrokers) and any TLS or SASL options.
//
// It runs until ctx ends, then commits the open transaction (if any),
// leaves the group and returns nil; it returns an error when the client
// cannot be created or a transaction cannot begin or end.
func RawPipe(ctx context.Context, o PipeOptions, opts ...kgo.Opt) error {
	if err := o.validate(); err != nil {
		return err
	}
	interval := o.CommitInterval
	if interval == 0 {
		interval = DefaultCommitInterval
	}
	sess, err := kgo.NewGroupTransactSession(append([]kgo.Opt{
		kgo.MetadataMinAge(250 * time.Millisecond),
		kgo.ConsumerGroup(o.Group),
		kgo.ConsumeTopics(o.Inputs...),
		kgo.InstanceID("raw"),
		kgo.SessionTimeout(pipeSessionTimeout),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.TransactionalID(o.Group + "-raw"),
		kgo.TransactionTimeout(pipeTxnTimeout),
	}, opts...)...)
	if err != nil {
		return fmt.Errorf("raw pipe: client: %w", err)
	}
	defer sess.Close()
	// Records are produced, and transactions ended, under a context that
	// outlives ctx: a canceled End leaves the client in an invalid state,
	// and the transaction open when ctx ends is still committed. An End
	// is bounded by the transaction timeout, after which the broker
	// aborts the transaction anyway.
	produceCtx := context.WithoutCancel(ctx)
	inTxn := false
	var started time.Time
	end := func() error {
		ectx, cancel := context.WithTimeout(produceCtx, pipeTxnTimeout)
		defer cancel()
		inTxn = false
		if _, err := sess.End(ectx, kgo.TryCommit); err != nil {
			return fmt.Errorf("raw pipe: ending a transaction: %w", err)
		}
		return nil
	}
	for ctx.Err() == nil {
		pctx, cancel := ctx, context.CancelFunc(func() {})
		if inTxn {
			pctx, cancel = context.WithDeadline(ctx, started.Add(interval))
		}
		fs := sess.PollRecords(pctx, pipePollRecords)
		cancel()
		if recs := fs.Records(); len(recs) > 0 {
			if !inTxn {
				if err := sess.Begin(); err != nil {
					return fmt.Errorf("raw pipe: beginning a transaction: %w", err)
				}
				inTxn, started = true, time.Now()
			}
			for _, r := range recs {
				sess.Produce(produceCtx, &kgo.Record{Topic: o.Output, Partition: r.Partition, Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp}, nil)
			}
		}
		if inTxn && time.Since(started) >= interval {
			if err := end(); err != nil {
				return err
			}
		}
	}
	if inTxn {
		return end()
	}
	return nil
}
