package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/config"
	"github.com/kdedup/kdedup/state"
)

// restoreChunk is how many replayed records go into one Pebble batch, so
// that a long restore's progress survives a crash.
const restoreChunk = 10_000

// restore brings a partition's state up to the committed offset to: the
// first record the group consumer returned after the partition was
// (re)assigned or its transaction aborted. Every record below it that is
// visible under read_committed was decided and committed by a transaction
// (of this instance or another), which wrote its state changes to the
// changelog.
//
// The state is caught up from the changelog first (restoreChangelog): from
// the changelog offset the local stamp reflects, or from the start for a
// partition this host never had. Where the changelog does not reach to (it
// was created after the group's offsets) the rest is rebuilt by replaying
// the input from the offset the state then reflects (restoreInput); under
// at_least_once, which writes no changelog, the input replay is all: decisions depend only on the input and the state, so the
// replay rebuilds exactly the state those transactions left.
//
// A stamp above the committed offset means the group's offsets were moved
// back (reset by an operator, or the group deleted): the keyspace holds
// decisions the group no longer stands by, so it is dropped and rebuilt
// from the partition's first record.
func (p *Processor) restore(ctx context.Context, st *partState, to int64) error {
	stamp := st.part.Stamp()
	log := p.log.With().Str("topic", st.tp.topic).Int32("partition", st.tp.partition).Logger()
	if stamp.Input == to {
		return nil
	}
	p.restores.Add(1)
	defer p.restores.Add(-1)
	if stamp.Input > to {
		log.Warn().Int64("stamp", stamp.Input).Int64("committed", to).Msg("state is ahead of the group's committed offset (offsets reset?): dropping it and rebuilding from the input")
		if err := p.dropState(st); err != nil {
			return err
		}
		return p.restoreInput(ctx, st, to, log)
	}
	if p.opts.Guarantee != config.ExactlyOnce {
		// No changelog under at_least_once (Processor.changelog).
		return p.restoreInput(ctx, st, to, log)
	}
	reached, err := p.restoreChangelog(ctx, st, to, log)
	if err != nil {
		return err
	}
	if reached {
		return nil
	}
	if st.part.Stamp().Input > to {
		log.Warn().Int64("changelog", st.part.Stamp().Input).Int64("committed", to).Msg("the changelog is ahead of the group's committed offset (offsets reset?): dropping the state and rebuilding from the input")
		if err := p.dropState(st); err != nil {
			return err
		}
	}
	return p.restoreInput(ctx, st, to, log)
}

// dropState deletes st's keyspace and opens it empty.
func (p *Processor) dropState(st *partState) error {
	st.part.Close()
	if err := p.opts.Store.DropPartition(st.tp.topic, st.tp.partition); err != nil {
		return err
	}
	part, err := p.opts.Store.OpenPartition(st.tp.topic, st.tp.partition, st.s.Rules.Lateness())
	if err != nil {
		return err
	}
	st.part = part
	return nil
}

// restoreChangelog applies st's changelog records from the stamp's
// changelog offset on, and reports whether a marker of input offset to was
// reached: the state then reflects exactly the committed input.
//
// To know when it has read everything committed, it first writes a
// sentinel record to the changelog partition and reads until it meets it
// (read_committed shows the sentinel only once every transaction open
// before it has ended). Changes are committed to Pebble in chunks, with the
// changelog offset, so that a restore that is interrupted resumes where it
// stopped.
func (p *Processor) restoreChangelog(ctx context.Context, st *partState, to int64, log zerolog.Logger) (bool, error) {
	cp := st.tp.partition % p.clParts
	stamp := st.part.Stamp()
	start := time.Now()

	cl, err := kgo.NewClient(append(p.clientOpts(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{p.opts.ChangelogTopic: {cp: kgo.NewOffset().At(stamp.Changelog)}}),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)...)
	if err != nil {
		return false, fmt.Errorf("creating changelog restore client: %w", err)
	}
	defer cl.Close()
	id := fmt.Appendf(nil, "%s/%s/%d/%d", p.txnID, st.tp.topic, st.tp.partition, start.UnixNano())
	sentinel := &kgo.Record{Topic: p.opts.ChangelogTopic, Partition: cp, Key: state.SentinelKey(id)}
	if err := cl.ProduceSync(ctx, sentinel).FirstErr(); err != nil {
		return false, fmt.Errorf("writing a sentinel to changelog %s/%d: %w", p.opts.ChangelogTopic, cp, err)
	}
	end := sentinel.Offset
	log.Info().Str("changelog", p.opts.ChangelogTopic).Int32("changelog_partition", cp).Int64("from", stamp.Changelog).Int64("to", end).
		Int64("input", stamp.Input).Int64("committed", to).Msg("restoring state from the changelog")

	// Blind batches: applying the changelog reads nothing; the keys are
	// counted once at the end.
	batch := st.part.NewBlindBatch()
	input, inChunk := stamp.Input, 0
	var applied, read int64
	first := int64(-1)
	last := time.Now()
	var pending []state.Change // changes since the partition's last marker
	apply := func() error {
		for _, c := range pending {
			var err error
			if c.Deleted {
				err = batch.Delete(c.Hash)
			} else {
				err = batch.Put(c.Hash, c.Entry)
			}
			if err != nil {
				return err
			}
		}
		inChunk += len(pending)
		pending = pending[:0]
		return nil
	}
	commit := func(next int64) error {
		if err := batch.Commit(input, next); err != nil {
			return err
		}
		batch = st.part.NewBlindBatch()
		inChunk = 0
		return nil
	}
	// finish commits the restore and counts the keys.
	finish := func(next int64) error {
		if err := commit(next); err != nil {
			return err
		}
		if _, err := st.part.CountKeys(); err != nil {
			return err
		}
		p.restored(st, log, "changelog", applied, start)
		return nil
	}
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if fetches.IsClientClosed() {
			return false, errors.New("changelog restore client closed")
		}
		fetches.EachError(func(t string, n int32, err error) {
			log.Warn().Err(err).Msg("changelog restore fetch error")
		})
		for _, r := range fetches.Records() {
			if first < 0 {
				first = r.Offset
			}
			read++
			c, err := state.ParseChange(r.Key, r.Value)
			if err != nil {
				return false, fmt.Errorf("changelog %s/%d offset %d: %w", r.Topic, r.Partition, r.Offset, err)
			}
			if c.Kind == state.ChangeSentinel {
				if r.Offset < end {
					continue // another restore's
				}
				// Everything committed before the sentinel is read; changes
				// after the last marker belong to no committed transaction.
				pending = pending[:0]
				if err := finish(r.Offset + 1); err != nil {
					return false, err
				}
				return st.part.Stamp().Input == to, nil
			}
			if c.Topic != st.tp.topic || c.Partition != st.tp.partition {
				continue
			}
			applied++
			if c.Kind != state.ChangeMarker {
				// Held until the transaction's marker shows it committed
				// at or below to.
				pending = append(pending, c)
				if len(pending) >= restoreChunk {
					// Compaction removed the markers of old transactions
					// (a restore from the start reads one marker per
					// partition): what precedes a later marker is applied
					// as read, and committed in chunks with the changelog
					// offset, the input offset staying at the last marker.
					if err := apply(); err != nil {
						return false, err
					}
					if err := commit(r.Offset + 1); err != nil {
						return false, err
					}
				}
				continue
			}
			if c.Input > to {
				// A transaction beyond the committed offset: under
				// at_least_once its changes reached the changelog before a
				// crash stopped the offset commit. Its records will be
				// decided again: leave its changes out.
				pending = pending[:0]
				if err := finish(r.Offset); err != nil {
					return false, err
				}
				return false, nil
			}
			if err := apply(); err != nil {
				return false, err
			}
			input = c.Input
			batch.SetEventTime(max(batch.EventTime(), c.EventTime))
			if input == to {
				// The state reflects the committed input.
				if err := finish(r.Offset + 1); err != nil {
					return false, err
				}
				return true, nil
			}
			if inChunk >= restoreChunk {
				if err := commit(r.Offset + 1); err != nil {
					return false, err
				}
			}
		}
		if time.Since(last) > time.Second && first >= 0 {
			last = time.Now()
			p.progress(st, log, read, end-first, start)
		}
	}
}

// progress reports a restore's progress: done of total (records or
// offsets), the keys so far and their rate.
func (p *Processor) progress(st *partState, log zerolog.Logger, done, total int64, start time.Time) {
	done = min(done, total)
	p.obs.Restored(st.tp.topic, st.tp.partition, done, total)
	keys := st.part.Stamp().Keys
	p.obs.Keys(st.tp.topic, st.tp.partition, keys)
	log.Info().Int64("done", done).Int64("total", total).Int64("keys", keys).
		Float64("keys_per_s", float64(keys)/max(time.Since(start).Seconds(), 1e-9)).
		Float64("percent", 100*float64(done)/float64(max(total, 1))).Msg("restoring state")
}

// restored logs and reports a finished restore.
func (p *Processor) restored(st *partState, log zerolog.Logger, from string, records int64, start time.Time) {
	took := time.Since(start)
	keys := st.part.Stamp().Keys
	p.obs.Restored(st.tp.topic, st.tp.partition, 1, 1)
	p.obs.Keys(st.tp.topic, st.tp.partition, keys)
	log.Info().Str("from", from).Int64("records", records).Int64("keys", keys).Dur("took", took).
		Float64("records_per_s", float64(records)/max(took.Seconds(), 1e-9)).
		Int64("input", st.part.Stamp().Input).Msg("state restored")
}

// restoreInput replays the input from the offset the state reflects up to
// to, deciding each record without emitting anything.
func (p *Processor) restoreInput(ctx context.Context, st *partState, to int64, log zerolog.Logger) error {
	from := st.part.Stamp().Input
	if from >= to {
		return nil
	}
	start := time.Now()
	total := to - from
	log.Info().Int64("from", from).Int64("to", to).Msg("restoring state: replaying committed input records")

	cl, err := kgo.NewClient(append(p.clientOpts(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{st.tp.topic: {st.tp.partition: kgo.NewOffset().At(from)}}),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)...)
	if err != nil {
		return fmt.Errorf("creating restore client: %w", err)
	}
	defer cl.Close()

	batch := st.part.NewBatch()
	var replayed, inChunk int64
	last := time.Now()
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if fetches.IsClientClosed() {
			return errors.New("restore client closed")
		}
		fetches.EachError(func(t string, n int32, err error) {
			log.Warn().Err(err).Msg("restore fetch error")
		})
		for _, r := range fetches.Records() {
			if r.Offset >= to {
				if err := batch.Commit(to, st.part.Stamp().Changelog); err != nil {
					return err
				}
				p.restored(st, log, "input", replayed, start)
				return nil
			}
			if _, err := st.s.eng.Decide(batch, p.record(p.unwrapped(st, r))); err != nil {
				return err
			}
			replayed++
			inChunk++
			if inChunk == restoreChunk {
				if err := batch.Commit(r.Offset+1, st.part.Stamp().Changelog); err != nil {
					return err
				}
				batch = st.part.NewBatch()
				inChunk = 0
			}
		}
		if time.Since(last) > time.Second {
			last = time.Now()
			p.progress(st, log, replayed, total, start)
		}
	}
}
