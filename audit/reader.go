package audit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Errors of Source.Record, wrapped with the coordinates.
var (
	// ErrGone: the offset is below the partition's start: retention (or a
	// deletion of records) removed the record.
	ErrGone = errors.New("record is gone (below the partition's start offset: removed by retention)")
	// ErrNotFound: the partition has no readable record at the offset: it
	// is at or past the partition's last stable offset, or it holds a
	// transaction marker, a record of an aborted transaction or a record
	// removed by compaction.
	ErrNotFound = errors.New("no such record")
)

// DefaultTimeout is Source.Timeout's default.
const DefaultTimeout = 30 * time.Second

// Source reads records from Kafka under read_committed without a consumer
// group: it lists the offsets it needs and assigns itself the partitions,
// so it joins no group, commits no offset and never disturbs kdedup's
// group. A record of an aborted transaction is never returned, nor one of a
// transaction still open.
type Source struct {
	// Opts are the client options that reach the brokers: seed brokers,
	// SASL, TLS. Source adds its own consuming options.
	Opts []kgo.Opt
	// Timeout bounds each metadata and offset listing, and the whole of
	// Record. Default (0): DefaultTimeout.
	Timeout time.Duration
}

func (s *Source) timeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return DefaultTimeout
}

// Range is the part of a topic a Tail reads.
type Range struct {
	// Since starts each partition at its first record with a timestamp at
	// or after Since. Default (zero): the partition's start.
	Since time.Time
	// Follow keeps reading new records until the context ends. Default
	// (false): stop at the partitions' last stable offsets as of the start.
	Follow bool
}

// Tail calls each with the records of topic in rg, in offset order within
// each partition, until each returns an error (returned as it is), the
// range ends (nil) or ctx ends (ctx.Err(); with Follow, the normal end).
// Records passed to each stay valid after it returns.
func (s *Source) Tail(ctx context.Context, topic string, rg Range, each func(*kgo.Record) error) error {
	from, end, err := s.bounds(ctx, topic, rg)
	if err != nil {
		return err
	}
	if len(from) == 0 {
		return nil // nothing to read
	}
	return s.consume(ctx, topic, from, end, each)
}

// bounds lists where a Tail of topic over rg starts in each partition and,
// unless it follows, where it ends: the last stable offsets, what
// read_committed can read now. Partitions with nothing to read are left
// out.
func (s *Source) bounds(ctx context.Context, topic string, rg Range) (from, end map[int32]int64, err error) {
	admin, err := kgo.NewClient(s.Opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting: %w", err)
	}
	defer admin.Close()
	adm := kadm.NewClient(admin)
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	var starts kadm.ListedOffsets
	if rg.Since.IsZero() {
		starts, err = adm.ListStartOffsets(ctx, topic)
	} else {
		starts, err = adm.ListOffsetsAfterMilli(ctx, rg.Since.UnixMilli(), topic)
	}
	if err = listed(topic, "start", starts, err); err != nil {
		return nil, nil, err
	}
	var ends kadm.ListedOffsets
	if !rg.Follow {
		ends, err = adm.ListCommittedOffsets(ctx, topic)
		if err = listed(topic, "end", ends, err); err != nil {
			return nil, nil, err
		}
		end = make(map[int32]int64)
	}
	from = make(map[int32]int64)
	for p, o := range starts[topic] {
		if !rg.Follow {
			e, ok := ends.Lookup(topic, p)
			if !ok || o.Offset >= e.Offset {
				continue
			}
			end[p] = e.Offset
		}
		from[p] = o.Offset
	}
	return from, end, nil
}

// consume calls each with the records of topic's partitions from the
// offsets in from, below the offsets in end; without end (nil) until ctx
// ends.
func (s *Source) consume(ctx context.Context, topic string, from, end map[int32]int64, each func(*kgo.Record) error) error {
	assign := make(map[int32]kgo.Offset, len(from))
	for p, o := range from {
		assign[p] = kgo.NewOffset().At(o)
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt(nil), s.Opts...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: assign}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// The markers that end transactions are kept so that a partition
		// whose last record before its end is a marker is seen to end.
		kgo.KeepControlRecords(),
		// Retention that removes records ahead of the reader: go on from
		// the partition's new start.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)...)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer cl.Close()
	follow := end == nil
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		for _, fe := range fs.Errors() {
			if fatalFetch(fe.Err) {
				return fmt.Errorf("reading %s/%d: %w", fe.Topic, fe.Partition, fe.Err)
			}
		}
		for _, f := range fs {
			for _, t := range f.Topics {
				for _, fp := range t.Partitions {
					for _, r := range fp.Records {
						if !follow {
							e, ok := end[fp.Partition]
							if !ok {
								break // done
							}
							if r.Offset >= e-1 {
								// The end: records of aborted
								// transactions are skipped, the
								// marker after them is not.
								delete(end, fp.Partition)
							}
							if r.Offset >= e {
								break
							}
						}
						if !r.Attrs.IsControl() {
							if err := each(r); err != nil {
								return err
							}
						}
					}
					if e, ok := end[fp.Partition]; ok && fp.LogStartOffset >= e {
						delete(end, fp.Partition) // retention passed the end
					}
				}
			}
		}
		if !follow && len(end) == 0 {
			return nil
		}
	}
}

// fatalFetch reports whether a fetch error ends a Tail: the client
// recovers from lost data (it resets to the partition's start) by itself.
func fatalFetch(err error) bool {
	var loss *kgo.ErrDataLoss
	return !errors.As(err, &loss)
}

// listed checks an offset listing of topic.
func listed(topic, what string, l kadm.ListedOffsets, err error) error {
	if err == nil {
		err = l.Error()
	}
	if err != nil {
		if errors.Is(err, kerr.UnknownTopicOrPartition) {
			return fmt.Errorf("topic %s does not exist", topic)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w (are the brokers reachable?)", err)
		}
		return fmt.Errorf("listing the %s offsets of %s: %w", what, topic, err)
	}
	if len(l[topic]) == 0 {
		return fmt.Errorf("topic %s does not exist", topic)
	}
	return nil
}

// Record returns the record at c, read under read_committed: ErrGone when
// retention removed it, ErrNotFound when there is no readable record
// there.
func (s *Source) Record(ctx context.Context, c Coordinates) (*kgo.Record, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	admin, err := kgo.NewClient(s.Opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting: %w", err)
	}
	defer admin.Close()
	adm := kadm.NewClient(admin)
	starts, err := adm.ListStartOffsets(ctx, c.Topic)
	if err = listed(c.Topic, "start", starts, err); err != nil {
		return nil, fmt.Errorf("%s: %w", c, err)
	}
	start, ok := starts.Lookup(c.Topic, c.Partition)
	if !ok {
		return nil, fmt.Errorf("%s: %w: topic %s has no partition %d", c, ErrNotFound, c.Topic, c.Partition)
	}
	if c.Offset < start.Offset {
		return nil, fmt.Errorf("%s: %w; it now starts at offset %d", c, ErrGone, start.Offset)
	}
	ends, err := adm.ListCommittedOffsets(ctx, c.Topic)
	if err = listed(c.Topic, "end", ends, err); err != nil {
		return nil, fmt.Errorf("%s: %w", c, err)
	}
	if e, _ := ends.Lookup(c.Topic, c.Partition); c.Offset >= e.Offset {
		return nil, fmt.Errorf("%s: %w: the partition's last stable offset is %d", c, ErrNotFound, e.Offset)
	}

	var found *kgo.Record
	err = s.consume(ctx, c.Topic, map[int32]int64{c.Partition: c.Offset}, map[int32]int64{c.Partition: c.Offset + 1}, func(r *kgo.Record) error {
		if r.Offset == c.Offset {
			found = r
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", c, err)
	}
	if found == nil {
		return nil, fmt.Errorf("%s: %w: a transaction marker, a record of an aborted transaction, or removed by compaction or retention", c, ErrNotFound)
	}
	return found, nil
}
