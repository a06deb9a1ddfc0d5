package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kdedup/kdedup/config"
)

// transaction is the open transaction of a session as the loop keeps it.
// Its state changes are the batches of the partitions it decided records
// of (partState.batch); what it produced, and whether that failed, the
// Writer knows. begin opens one, end (Processor.end) commits or aborts
// it, reset forgets it: nothing of it is reset by hand elsewhere.
type transaction struct {
	open    bool
	start   time.Time
	records int  // input records decided or forwarded in it
	rewind  bool // abort it, to restore a partition first
	// fwdNext is, per forwarded input partition, the offset after its
	// last record in the transaction.
	fwdNext map[tp]int64
	// forgets are the key forgets (keys.go) written in it, answered when
	// it ends.
	forgets []*keyRequest
}

// begin opens a transaction on c unless one is open.
func (t *transaction) begin(c client) error {
	if t.open {
		return nil
	}
	if err := c.Begin(); err != nil {
		return fmt.Errorf("beginning a transaction: %w", err)
	}
	t.open, t.start, t.records = true, time.Now(), 0
	return nil
}

// due reports whether the open transaction has collected records for
// interval: time to end it.
func (t *transaction) due(interval time.Duration) bool {
	return t.open && time.Since(t.start) >= interval
}

// reset forgets the transaction: it is over, or its session is.
func (t *transaction) reset() {
	*t = transaction{fwdNext: map[tp]int64{}}
}

// end ends the open transaction. Committed: every partition's batch goes
// to Pebble with its new stamp. Aborted: the batches are dropped and every
// partition is checked again (the client rewound to the committed
// offsets). An error means the outcome is unknown: the caller rebuilds the
// session, which checks every partition's stamp against the committed
// offsets, so nothing is guessed.
func (p *Processor) end(ctx context.Context, c client) error {
	t := p.txn
	commit, err := p.prepareEnd(ctx, c)
	if err != nil {
		p.forgetsEnded(t.forgets, false)
		p.resetTxn()
		return err
	}
	start := time.Now()
	committed, err := p.endTxn(ctx, c, commit)
	took := time.Since(start)
	failErr := p.w.Err()
	p.resetTxn()
	p.obs.Transaction(committed, took, t.records)
	if failErr != nil {
		p.log.Warn().Err(failErr).Msg("transaction aborted: a record could not be produced")
	}
	if err != nil {
		p.forgetsEnded(t.forgets, false)
		return fmt.Errorf("ending transaction (outcome unknown): %w", err)
	}
	if committed {
		p.applyCommitted(t)
		p.forgetsEnded(t.forgets, true)
		return nil
	}
	p.forgetsEnded(t.forgets, false)
	p.discard()
	why := "transaction aborted; consuming again from the committed offsets"
	if t.rewind {
		why = "transaction aborted to restore a newly assigned partition first; consuming again from the committed offsets"
	}
	p.log.Info().Dur("took", took).Msg(why)
	return nil
}

// prepareEnd decides whether the open transaction can commit: nothing
// failed and no rewind is asked for; then it writes the partitions' last
// changes (finishChanges) and waits for every record's outcome. An error
// means the flush failed: the session must be rebuilt.
func (p *Processor) prepareEnd(ctx context.Context, c client) (commit bool, err error) {
	if p.w.Failed() || p.txn.rewind {
		return false, nil
	}
	if err := p.finishChanges(ctx, c); err != nil {
		p.w.Fail(err)
		return false, nil
	}
	// Records still in flight may yet fail (a refusal, a changelog
	// write): End commits whatever the outcome of a produce, so wait for
	// every outcome first and decide on them all.
	if err := c.Flush(ctx); err != nil {
		// The session is rebuilt: whatever this transaction met is gone
		// with it, and must not abort the next session's first
		// transaction.
		return false, fmt.Errorf("flushing the transaction's records: %w", err)
	}
	return !p.w.Failed(), nil
}

// endTxn ends the transaction on c, committing it if commit, and reports
// whether it committed; an error means its outcome is unknown.
func (p *Processor) endTxn(ctx context.Context, c client, commit bool) (bool, error) {
	// An End that hangs (a coordinator that stopped answering) must not
	// hang the loop: past the transaction timeout the broker aborts the
	// transaction anyway, and the outcome counts as unknown.
	ectx, cancel := context.WithTimeout(ctx, p.opts.TransactionTimeout)
	committed, err := c.End(ectx, commit)
	cancel()
	if err == nil && commit && !committed && p.opts.Guarantee == config.ExactlyOnce {
		// Asked to commit, told it aborted: a genuine abort (the group
		// rebalanced), or a commit franz-go could not confirm (EndTxn
		// answered UNKNOWN_SERVER_ERROR, which it retries as an abort that
		// no longer reaches the broker, and reports as one). Deciding the
		// records again after a commit that landed would emit them twice:
		// ask the coordinator.
		err = p.commitLanded(ctx, c)
	}
	return committed, err
}

// applyCommitted commits the batches of committed transaction t to
// their partitions, each with its new stamp, and forgets the refusals of
// the records it decided for good. Pebble writes each batch on a
// goroutine of its own (CommitAsync) while the loop goes on with the next
// transaction, whose reads see the batch until Pebble has it; a write that
// fails surfaces at the partition's next commit or retirement, which then
// fails, and the partition is checked against the committed offset.
func (p *Processor) applyCommitted(t transaction) {
	p.eachBatch(func(st *partState) error {
		p.w.Forget(st.tp.topic, st.tp.partition, st.next)
		cl := st.clNext.Load()
		if cl == 0 {
			cl = st.part.Stamp().Changelog
		}
		if err := st.batch.CommitAsync(st.next, cl); err != nil {
			// The state lags the broker now: the next record replays
			// the gap.
			p.log.Error().Err(err).Str("topic", st.tp.topic).Int32("partition", st.tp.partition).Msg("writing state after commit")
			st.check = true
		}
		return nil
	})
	for _, st := range p.parts {
		if st.batch != nil {
			st.batch = nil
			p.obs.Keys(st.tp.topic, st.tp.partition, st.part.Stamp().Keys)
		}
	}
	for key, next := range t.fwdNext {
		p.w.Forget(key.topic, key.partition, next)
	}
}

// eachBatch calls fn for every partition the open transaction changed
// (with a batch), each on a goroutine of its own (one: on this one), and
// returns their errors joined. fn may touch only its partition, the
// Writer and the client.
func (p *Processor) eachBatch(fn func(st *partState) error) error {
	var sts []*partState
	for _, st := range p.parts {
		if st.batch != nil {
			sts = append(sts, st)
		}
	}
	if len(sts) == 1 {
		return fn(sts[0])
	}
	errs := make([]error, len(sts))
	var wg sync.WaitGroup
	for i, st := range sts {
		wg.Go(func() { errs[i] = fn(st) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// discard drops the batches of an aborted transaction; every partition is
// checked against its committed offset before its next record (the client
// rewound to those).
func (p *Processor) discard() {
	for _, st := range p.parts {
		if st.batch != nil {
			st.batch.Discard()
			st.batch = nil
		}
		st.check = true
	}
}

// commitLanded returns nil if the group's coordinator holds no offset of
// the transaction's partitions beyond what the client knows as committed
// (the transaction really aborted), and an error, making the outcome
// unknown, if it does or cannot tell.
func (p *Processor) commitLanded(ctx context.Context, c client) error {
	fctx, cancel := context.WithTimeout(ctx, p.opts.TransactionTimeout)
	offs, err := c.StableOffsets(fctx, p.opts.Group)
	cancel()
	if err != nil {
		return fmt.Errorf("transaction reported aborted; checking the group's offsets failed: %w", err)
	}
	var keys []tp
	for key, st := range p.parts {
		if st.batch != nil {
			keys = append(keys, key)
		}
	}
	for key := range p.txn.fwdNext {
		keys = append(keys, key)
	}
	for _, key := range keys {
		o, ok := offs.Lookup(key.topic, key.partition)
		if !ok {
			continue
		}
		if o.Err != nil {
			return fmt.Errorf("transaction reported aborted; the group's offset of %s/%d: %w", key.topic, key.partition, o.Err)
		}
		known, ok := p.committed(c, key)
		if !ok {
			// Revoked: the client dropped it, and its new owner starts
			// from the coordinator's offset, whatever this transaction did.
			continue
		}
		if o.At > known {
			return fmt.Errorf("transaction reported aborted, but the group committed %s/%d at %d (this session knew %d): it committed", key.topic, key.partition, o.At, known)
		}
	}
	return nil
}

// resetTxn forgets the open transaction and what it met: its failure and
// the forwarded offsets. The transaction is over, or its session is.
func (p *Processor) resetTxn() {
	p.txn.reset()
	p.w.Reset()
}
