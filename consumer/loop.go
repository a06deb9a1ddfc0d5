package consumer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/config"
	"github.com/kdedup/kdedup/dedup"
	"github.com/kdedup/kdedup/producer"
	"github.com/kdedup/kdedup/state"
)

// stallRejoinEvery bounds how often one partition's fetch errors make the
// session rejoin: once is what a dropped partition needs; a broker that
// keeps failing must not turn into a rejoin loop that aborts every
// transaction.
const stallRejoinEvery = 5 * time.Minute

// stalled reports whether the fetch error err of key means the client
// stopped consuming key, so that the session must rejoin: a non-retryable
// broker error (franz-go retries retryable ones itself, and goes on after
// data loss, which it reports as *kgo.ErrDataLoss) on an assigned
// partition the client keeps no offsets for. franz-go keeps a partition
// whose fetches fail and retries them; one whose committed offset it
// could not fetch it drops from the assignment and reports once, as here.
// At most once per stallRejoinEvery for a partition.
func (p *Processor) stalled(c client, key tp, err error) bool {
	var loss *kgo.ErrDataLoss
	if errors.As(err, &loss) || errors.Is(err, kgo.ErrClientClosed) {
		return false
	}
	var ke *kerr.Error
	if !errors.As(err, &ke) || ke.Retriable {
		return false
	}
	if _, known := p.committed(c, key); known {
		return false // consumed: the client retries
	}
	if last, ok := p.stallRejoins[key]; ok && time.Since(last) < stallRejoinEvery {
		return false
	}
	p.stallRejoins[key] = time.Now()
	return true
}

// loop is the poll → decide → produce → commit cycle of one client.
func (p *Processor) loop(ctx context.Context, c client) error {
	p.cl = c
	defer func() { p.cl = nil }()
	for {
		p.applyRebalances()
		if ctx.Err() != nil {
			if p.txn.open {
				// Finish what was decided: a bounded, final commit.
				fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := p.end(fctx, c)
				cancel()
				if err != nil {
					p.log.Warn().Err(err).Msg("ending the last transaction on shutdown")
				}
			}
			return nil
		}
		if !p.txn.open && p.keysWaiting() {
			if err := p.serveKeys(ctx, c); err != nil {
				return err
			}
		}
		if !p.txn.open && p.lowOnDisk(c) {
			p.waitDisk(ctx) // disk.go: fail closed until there is room
			continue
		}
		// Idle, the poll wakes up now and then to let partitions write
		// what they hold in memory (tick), and at once for a key
		// request (wake).
		deadline := time.Now().Add(idleTick)
		if p.txn.open {
			deadline = p.txn.start.Add(p.opts.CommitInterval)
		}
		pollCtx, cancel := context.WithDeadline(ctx, deadline)
		if !p.txn.open {
			p.armWake(cancel)
		}
		fetches := c.PollRecords(pollCtx, p.opts.MaxPollRecords)
		p.setWake(nil)
		cancel()
		if fetches.IsClientClosed() {
			return errors.New("client closed")
		}
		if err := p.fetchErrors(c, fetches); err != nil {
			return err
		}
		p.applyRebalances()
		if recs := fetches.Records(); len(recs) > 0 {
			if err := p.process(ctx, c, recs); err != nil {
				return err
			}
		} else if !p.txn.open {
			p.ready.Store(true)
			p.tick()
		}
		if p.txn.due(p.opts.CommitInterval) {
			if err := p.end(ctx, c); err != nil {
				return err
			}
			// Between transactions: a partition that no longer gets
			// records writes its changes once due, even while others
			// keep the loop busy.
			p.tick()
		}
	}
}

// idleTick is how often an idle loop lets its partitions write what they
// hold in memory to Pebble (state.Partition.Tick).
const idleTick = time.Second

// tick lets every partition write its committed changes held in memory
// once they are due (state.Partition.Tick): a partition that stopped
// receiving records would otherwise keep them there, and a snapshot or a
// restart after a crash would not see them. Only between transactions
// (idle, or after each end): no batch is open. A failed write marks the partition for a check
// against its committed offset, as a failed commit does.
func (p *Processor) tick() {
	for _, st := range p.parts {
		if err := st.part.Tick(); err != nil {
			p.log.Error().Err(err).Str("topic", st.tp.topic).Int32("partition", st.tp.partition).Msg("writing state")
			st.check = true
		}
	}
}

// fetchErrors logs the fetch errors of a poll, and returns
// errPartitionStalled if one stopped a partition (stalled): franz-go
// drops a partition whose committed offset could not be fetched (a
// non-retryable OffsetFetch error) from the assignment and reports it
// once, as here: nothing would consume it until the next rebalance.
// Rejoining fetches the offsets again. What the open transaction decided
// aborts.
func (p *Processor) fetchErrors(c client, fetches kgo.Fetches) error {
	var stalled error
	fetches.EachError(func(t string, n int32, err error) {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return
		}
		if p.stalled(c, tp{t, n}, err) {
			p.log.Error().Err(err).Str("topic", t).Int32("partition", n).Msg("fetch error that stopped the partition: rejoining the group")
			stalled = errors.Join(stalled, fmt.Errorf("%s/%d: %w", t, n, err))
			return
		}
		p.log.Warn().Err(err).Str("topic", t).Int32("partition", n).Msg("fetch error")
	})
	if stalled != nil {
		return fmt.Errorf("%w: %w", errPartitionStalled, stalled)
	}
	return nil
}

// process decides and produces one poll's records, restoring partitions
// first where their state is behind the group's committed offset.
//
// A restore never runs inside a transaction: it can take longer than the
// transaction may stay open. Records of a partition that is behind,
// arriving while a transaction is open, abort it (the client rewinds
// every partition to its committed offset), and every partition of the
// poll that is behind is then restored to its committed offset at once,
// before the next poll. Restoring only when such records arrive while no
// transaction is open would not be enough on several brokers: after the
// rewind each broker's fetch answers in its own time, and if a
// partition's leader is always slower than the others, its records would
// always arrive second, inside the transaction the faster partitions
// began, and abort it again, forever.
func (p *Processor) process(ctx context.Context, c client, recs []*kgo.Record) error {
	behind, err := p.behindOf(c, recs)
	if err != nil {
		return err
	}
	if len(behind) > 0 {
		if p.txn.open && p.opts.Guarantee == config.ExactlyOnce {
			// Committing now would commit the offsets of this poll's
			// records, decided or not: abort, which rewinds to the
			// committed offsets, then restore to those.
			p.txn.rewind = true
			if err := p.end(ctx, c); err != nil {
				return err
			}
			return p.restoreBehind(ctx, c, behind)
		}
		if err := p.restoreBehind(ctx, c, behind); err != nil {
			return err
		}
	}
	p.ready.Store(true)
	if err := p.txn.begin(c); err != nil {
		return err
	}
	p.decideAll(ctx, c, recs)
	return nil
}

// partRecords are one partition's records of a poll, in offset order.
type partRecords struct {
	st   *partState
	recs []*kgo.Record
}

// decideAll forwards the records of repartitioning inputs, then decides
// the others, each partition's in order on a goroutine of its own:
// partitions share nothing but the Writer, the client and the Observer,
// which are safe for concurrent use, and the Pebble store, which is too.
// A record of a partition revoked meanwhile (the transaction aborts), or
// not verified against its committed offset (not assigned: a revocation
// is pending), is not decided. A failure fails the transaction.
func (p *Processor) decideAll(ctx context.Context, c client, recs []*kgo.Record) {
	var groups []partRecords
	idx := map[*partState]int{}
	for _, r := range recs {
		if fw := p.forwards[r.Topic]; fw != nil {
			p.forward(ctx, c, fw, r)
			continue
		}
		st := p.parts[tp{r.Topic, r.Partition}]
		if st == nil || st.check {
			continue
		}
		i, ok := idx[st]
		if !ok {
			i = len(groups)
			idx[st] = i
			groups = append(groups, partRecords{st: st})
		}
		groups[i].recs = append(groups[i].recs, r)
	}
	decided := make([]int, len(groups))
	if len(groups) == 1 {
		decided[0] = p.decidePartition(ctx, c, groups[0])
	} else {
		var wg sync.WaitGroup
		for i, g := range groups {
			wg.Go(func() { decided[i] = p.decidePartition(ctx, c, g) })
		}
		wg.Wait()
	}
	for _, n := range decided {
		p.txn.records += n
	}
}

// decidePartition decides g's records in order and returns how many it
// decided; it stops at a failure, which fails the transaction.
func (p *Processor) decidePartition(ctx context.Context, c client, g partRecords) int {
	var counts [dedup.NumReasons]int
	n := 0
	for _, r := range g.recs {
		d, err := p.decide(ctx, c, g.st, r)
		if err != nil {
			p.w.Fail(err)
			break
		}
		counts[d]++
		n++
	}
	for r, k := range counts {
		if k > 0 {
			p.obs.Decided(g.st.s.Rules.Name(), dedup.Reason(r), k)
		}
	}
	return n
}

// behindOf returns the partitions of recs whose state is behind the
// group's committed offset (behind), opening the keyspaces of partitions
// new to this session; a partition found up to date is not checked
// again until the next rebalance or abort.
func (p *Processor) behindOf(c client, recs []*kgo.Record) ([]*partState, error) {
	first := map[tp]int64{}
	for _, r := range recs {
		if p.forwards[r.Topic] != nil {
			continue // forwarded, not decided: no state
		}
		key := tp{r.Topic, r.Partition}
		if _, ok := first[key]; !ok {
			first[key] = r.Offset
		}
	}
	var behind []*partState
	for key, off := range first {
		if !p.assigned[key] {
			continue // revoked since the poll: its records are not decided, the transaction aborts
		}
		st, err := p.partition(key)
		if err != nil {
			return nil, err
		}
		if !st.check {
			continue
		}
		if p.behind(c, st, off) {
			behind = append(behind, st)
			continue
		}
		st.check = false
	}
	return behind, nil
}

// restoreBehind restores each partition of sts, one after another, to the
// group's committed offset. Rebalances are applied between restores: a
// partition revoked meanwhile is skipped (a restore running when its
// partition is revoked stops), so that no restore works towards an offset
// that went stale.
func (p *Processor) restoreBehind(ctx context.Context, c client, sts []*partState) error {
	for _, st := range sts {
		p.applyRebalances()
		if !p.assigned[st.tp] || p.parts[st.tp] != st {
			continue
		}
		to, ok := p.committed(c, st.tp)
		if !ok {
			// Records polled, yet no committed offset known: the client
			// dropped the partition, which it does on a revocation (the
			// session reports only the first revocation before the next
			// End, so this one may not be queued). Its records are not
			// decided; the transaction aborts.
			p.log.Info().Str("topic", st.tp.topic).Int32("partition", st.tp.partition).Msg("partition no longer consumed by the client: not restored")
			continue
		}
		err := p.restore(ctx, st, to)
		if errors.Is(err, errRevoked) {
			p.log.Info().Str("topic", st.tp.topic).Int32("partition", st.tp.partition).Msg("partition revoked during its restore: restore stopped")
			continue
		}
		if err != nil {
			return fmt.Errorf("restoring %s/%d: %w", st.tp.topic, st.tp.partition, err)
		}
		st.check = false
	}
	return nil
}

// behind reports whether st's state needs a restore before its record at
// offset first: its stamp is neither first nor the group's committed
// offset (the first record may lie beyond that: transaction markers take
// offsets), or it holds changes ahead of its stamp (state.Stamp.Ahead). A
// committed offset the client does not know counts as behind:
// restoreBehind then decides.
func (p *Processor) behind(c client, st *partState, first int64) bool {
	stamp := st.part.Stamp()
	if stamp.Ahead {
		return true // holds changes no marker confirmed: restore further
	}
	in := stamp.Input
	if in == first {
		return false
	}
	to, ok := p.committed(c, st.tp)
	return !ok || in != to
}

// committed returns the group's committed offset of key as the session
// knows it: fetched when the partition was assigned, moved by each
// commit. The client drops the entry of a partition it stops consuming.
//
// A partition the group never committed has offset 0 here once a record
// of it was polled (franz-go starts such a partition's entry at offset 0;
// TestCommittedOffsetWithoutCommit pins this): its state must then reflect
// nothing, whatever offset its first record has. Not known (false): the
// session has no entry for the partition, which happens only once it is
// revoked.
func (p *Processor) committed(c client, key tp) (int64, bool) {
	o := c.Committed(key.topic, key.partition)
	return o, o >= 0
}

// partition returns the state of an assigned partition, opening its
// keyspace on first use.
func (p *Processor) partition(key tp) (*partState, error) {
	if st, ok := p.parts[key]; ok {
		return st, nil
	}
	s := p.streams[key.topic]
	if s == nil {
		return nil, fmt.Errorf("record of %s, which no stream reads", key.topic)
	}
	part, err := p.opts.Store.OpenPartition(key.topic, key.partition, s.Rules.Lateness())
	if err != nil {
		return nil, err
	}
	st := &partState{s: s, eng: dedup.NewEngine(s.Rules), tp: key, part: part, check: true}
	p.parts[key] = st
	p.obs.Keys(key.topic, key.partition, part.Stamp().Keys)
	return st, nil
}

// forward writes input record r of a repartitioning stream to its
// repartition topic, to the partition of its scoped key's hash (a record
// without a valid key keeps its partition number: it is audited wherever
// it goes), in the open transaction.
func (p *Processor) forward(ctx context.Context, c client, s *streamRun, r *kgo.Record) {
	n := s.out.RepartitionPartitions
	part := r.Partition % n
	if h, ok := s.eng.Route(record(r, &p.hdrs)); ok {
		part = int32(binary.BigEndian.Uint64(h[:8]) % uint64(n))
	}
	p.txn.records++
	p.txn.fwdNext[tp{r.Topic, r.Partition}] = r.Offset + 1
	p.w.Forward(ctx, c, &s.out, producer.Coord{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}, r, part)
}

// unwrapped returns the input record a record of st stands for: for a
// repartition topic, the original with its own coordinates and headers.
func (p *Processor) unwrapped(st *partState, r *kgo.Record) *kgo.Record {
	if st.s.Repartition == "" {
		return r
	}
	if in, ok := producer.Unwrap(r); ok {
		return in
	}
	return r
}

// decide decides one record and produces its output or audit record,
// and its state change, if any, to the changelog. It returns the
// decision's reason.
func (p *Processor) decide(ctx context.Context, c client, st *partState, rr *kgo.Record) (dedup.Reason, error) {
	// rr is the record consumed (its offset is the partition's); r the
	// input record it stands for, whose coordinates, key and headers the
	// decision and its output or audit record carry.
	r := p.unwrapped(st, rr)
	if st.batch == nil {
		st.batch = st.part.NewBatch()
		st.clNext.Store(0)
		st.clock = st.seek.next(time.Now())
	}
	d, err := st.eng.Decide(st.batch, record(r, &st.hdrs))
	if err != nil {
		return 0, err
	}
	st.next = rr.Offset + 1
	if d.Stored {
		k, v := state.EntryChange(st.tp.topic, st.tp.partition, d.Hash, &d.Entry)
		p.changelog(ctx, c, st, k, v, nil)
	}
	p.w.Decided(ctx, c, &st.s.out, producer.Coord{Topic: st.tp.topic, Partition: st.tp.partition, Offset: rr.Offset}, r, &d)
	return d.Reason, nil
}

// changelog produces a changelog record of st's state in the open
// transaction (nothing without a changelog: Processor.changelogs), with the
// transaction's clock as its timestamp (seek.go); the broker's offset
// raises st.clNext.
func (p *Processor) changelog(ctx context.Context, c client, st *partState, key, value []byte, hs []kgo.RecordHeader) {
	p.w.Changelog(ctx, c, st.tp.topic, st.tp.partition, key, value, st.clock, hs, st.changelogWritten)
}

// changelogWritten raises clNext to next, the offset after a changelog
// record of the partition the broker took (on a client goroutine).
func (st *partState) changelogWritten(next int64) {
	for {
		cur := st.clNext.Load()
		if next <= cur || st.clNext.CompareAndSwap(cur, next) {
			return
		}
	}
}

// finishChanges ends each partition's changes of the open transaction in
// the changelog: tombstones of the keys retired as of the batch's
// watermark (deleted in the batch too), then the marker saying which
// input offset and watermark the partition's state reflects once the
// transaction commits. Partitions in parallel (eachBatch).
func (p *Processor) finishChanges(ctx context.Context, c client) error {
	return p.eachBatch(func(st *partState) error {
		_, _, err := st.batch.Retire(p.opts.RetireLimit, func(h dedup.Hash) {
			p.changelog(ctx, c, st, state.Tombstone(st.tp.topic, st.tp.partition, h), nil, nil)
		})
		if err != nil {
			return fmt.Errorf("retiring expired keys of %s/%d: %w", st.tp.topic, st.tp.partition, err)
		}
		k, v := state.MarkerChange(st.tp.topic, st.tp.partition, st.next, st.batch.EventTime())
		seek := st.seek.observe(st.batch.EventTime(), st.s.Rules.TTL()+st.s.Rules.Lateness())
		p.changelog(ctx, c, st, k, v, seekHeaders(seek))
		return nil
	})
}

// record converts a franz-go record for the engine, reusing the header
// buffer hdrs.
func record(r *kgo.Record, hdrs *[]dedup.Header) *dedup.Record {
	hs := (*hdrs)[:0]
	for _, h := range r.Headers {
		hs = append(hs, dedup.Header(h))
	}
	*hdrs = hs
	return &dedup.Record{
		Topic:     r.Topic,
		Partition: r.Partition,
		Offset:    r.Offset,
		Timestamp: r.Timestamp.UnixMilli(),
		Value:     r.Value,
		Headers:   hs,
	}
}
