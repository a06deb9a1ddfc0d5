package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// restoreChunk is how many replayed records go into one Pebble batch, so
// that a long restore's progress survives a crash.
const restoreChunk = 10_000

// restore brings a partition's state up to the committed offset to: the
// first record the group consumer returned after the partition was
// (re)assigned or its transaction aborted. Every record below it that is
// visible under read_committed was decided and committed by a transaction
// (of this instance or another); records the stamp does not reflect are
// decided again, without emitting anything. Decisions depend only on the
// input and the state, so the replay rebuilds exactly the state those
// transactions left.
//
// A stamp above the committed offset means the group's offsets were moved
// back (reset by an operator, or the group deleted): the keyspace holds
// decisions the group no longer stands by, so it is dropped and rebuilt from
// the partition's first record.
func (p *Processor) restore(ctx context.Context, st *partState, to int64) error {
	stamp := st.part.Stamp()
	from := stamp.Input
	log := p.log.With().Str("topic", st.tp.topic).Int32("partition", st.tp.partition).Logger()
	if from == to {
		return nil
	}
	if from > to {
		log.Warn().Int64("stamp", from).Int64("committed", to).Msg("state is ahead of the group's committed offset (offsets reset?): dropping it and rebuilding from the start")
		st.part.Close()
		if err := p.opts.Store.DropPartition(st.tp.topic, st.tp.partition); err != nil {
			return err
		}
		part, err := p.opts.Store.OpenPartition(st.tp.topic, st.tp.partition, st.s.Rules.Lateness())
		if err != nil {
			return err
		}
		st.part = part
		from = 0
	}
	p.restores.Add(1)
	defer p.restores.Add(-1)
	start := time.Now()
	total := to - from
	log.Info().Int64("from", from).Int64("to", to).Msg("restoring state: replaying committed records")

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
				if err := batch.Commit(to, 0); err != nil {
					return err
				}
				p.obs.Restored(st.tp.topic, st.tp.partition, total, total)
				p.obs.Keys(st.tp.topic, st.tp.partition, st.part.Stamp().Keys)
				log.Info().Int64("records", replayed).Dur("took", time.Since(start)).
					Float64("records_per_s", float64(replayed)/max(time.Since(start).Seconds(), 1e-9)).
					Int64("keys", st.part.Stamp().Keys).Msg("state restored")
				return nil
			}
			if _, err := st.s.eng.Decide(batch, p.record(r)); err != nil {
				return err
			}
			replayed++
			inChunk++
			if inChunk == restoreChunk {
				if err := batch.Commit(r.Offset+1, 0); err != nil {
					return err
				}
				batch = st.part.NewBatch()
				inChunk = 0
			}
		}
		if time.Since(last) > time.Second {
			last = time.Now()
			done := min(replayed, total)
			p.obs.Restored(st.tp.topic, st.tp.partition, done, total)
			log.Info().Int64("replayed", replayed).Int64("total", total).
				Float64("percent", 100*float64(done)/float64(max(total, 1))).Msg("restoring state")
		}
	}
}
