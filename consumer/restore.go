package consumer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/state"
)

// restoreChunk is how many replayed input records go into one Pebble
// batch, so that a long restore's progress survives a crash. A changelog
// restore commits whenever its Loader is full (state.Loader).
const restoreChunk = 10_000

// restoreFetchBytes bounds a restore client's fetches, per partition and
// in all: a restore reads one partition, as fast as it can, so each
// fetch returns as much as the broker will (kgo's default per partition,
// 1 MiB, made a fetch round trip every ~13,000 changelog records).
const restoreFetchBytes = 32 << 20

// restore brings a partition's state up to to, the group's committed
// offset: every record below it that is visible under read_committed was
// decided and committed by a transaction (of this instance or another),
// which wrote its state changes to the changelog.
//
// The state is caught up from the changelog first (restoreChangelog): from
// the changelog offset the local stamp reflects, or from the start for a
// partition this host never had. Where the changelog does not reach to (it
// was created after the group's offsets) the rest is rebuilt by replaying
// the input from the offset the state then reflects (restoreInput); under
// at_least_once, which writes no changelog, the input replay is all:
// decisions depend only on the input and the state, so the replay rebuilds
// exactly the state those transactions left. So too with the changelog
// turned off (Options.NoChangelog).
//
// A stamp above the committed offset, or a changelog of transactions
// beyond it while the group's coordinator agrees on it, means the group's
// offsets were moved back (reset by an operator, or the group deleted):
// the keyspace holds decisions the group no longer stands by, so it is
// dropped and rebuilt from the input.
//
// A restore gives up with errRevoked when its partition is revoked, with
// errRestoreStalled when it reads nothing for Options.RestoreStallTimeout,
// and with errStaleTarget when to turns out stale (another member
// committed beyond it). What it committed to Pebble stays, stamped with
// the offsets it reflects, so that the next restore resumes there.
func (p *Processor) restore(ctx context.Context, st *partState, to int64) error {
	stamp := st.part.Stamp()
	log := p.log.With().Str("topic", st.tp.topic).Int32("partition", st.tp.partition).Logger()
	if stamp.Input == to && !stamp.Ahead {
		return nil
	}
	p.restores.Add(1)
	defer p.restores.Add(-1)
	if stamp.Input > to || stamp.Ahead && !p.changelogs() {
		log.Warn().Int64("stamp", stamp.Input).Bool("ahead", stamp.Ahead).Int64("committed", to).Msg("state is ahead of the group's committed offset (offsets reset?): dropping it and rebuilding from the input")
		if err := p.dropState(st); err != nil {
			return err
		}
		return p.restoreInput(ctx, st, to, log)
	}
	if !p.changelogs() {
		// No changelog: at_least_once, or turned off (Processor.changelogs).
		return p.restoreInput(ctx, st, to, log)
	}
	out, err := p.restoreChangelog(ctx, st, to, log)
	if err != nil {
		return err
	}
	switch out {
	case changelogReached:
		return nil
	case changelogMovedBack, changelogUnconfirmed:
		why := "the changelog holds transactions beyond the group's committed offset (offsets reset?)"
		if out == changelogUnconfirmed {
			why = "changes written ahead of their marker were never confirmed by one"
		}
		log.Warn().Int64("committed", to).Msg(why + ": dropping the state and rebuilding from the input")
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

// changelogOutcome is how a changelog restore ended.
type changelogOutcome int

const (
	// changelogReached: the state reflects exactly the committed input.
	changelogReached changelogOutcome = iota
	// changelogShort: the changelog ends before the committed input; the
	// rest is replayed from the input.
	changelogShort
	// changelogMovedBack: the changelog holds transactions beyond the
	// committed offset, and the group's coordinator confirms that offset:
	// the offsets were moved back, the state must be rebuilt.
	changelogMovedBack
	// changelogUnconfirmed: the sentinel came while changes written ahead
	// of their marker (Stamp.Ahead) still wait for it: they belong to no
	// committed transaction (read_committed shows none such, unless a
	// broker compacted past an open transaction), the state must be
	// rebuilt.
	changelogUnconfirmed
)

// restoreChangelog applies st's changelog records from the stamp's
// changelog offset on, until a marker of input offset to.
//
// To know when it has read everything committed, it first writes a
// sentinel record to the changelog partition and reads until it meets it
// (read_committed shows the sentinel only once every transaction open
// before it has ended). Changes are committed to Pebble in chunks, with the
// changelog offset, so that a restore that is interrupted resumes where it
// stopped.
//
// A transaction's changes are applied once its marker shows it committed
// at or below to. Compaction keeps one marker per partition, so a restore
// from the start of a compacted changelog reads every live key before
// that one marker: changes pending past restoreChunk are written to Pebble
// ahead of their marker, to bound memory, and the stamp is marked Ahead
// until a marker at or below to confirms them; an Ahead state is never
// decided from (Processor.behind), only restored further. If a marker
// beyond to follows, the restore stops with its position just after the
// last marker applied (never past a change it left out), and either to
// was stale (errStaleTarget: another member committed beyond it, so every
// later target is beyond those changes too, and replaying from the
// position overwrites them in order) or the offsets were moved back
// (changelogMovedBack: the caller drops the whole state).
func (p *Processor) restoreChangelog(ctx context.Context, st *partState, to int64, log zerolog.Logger) (changelogOutcome, error) {
	cr := p.newChangelogRestore(st, to, log)
	err := cr.open(ctx)
	if err != nil {
		return 0, err
	}
	defer cr.cl.Close()
	if cr.load, err = st.part.NewLoader(p.opts.RestoreBuffer); err != nil {
		return 0, err
	}
	// A restore that ends on an error leaves no Commit in flight: the
	// partition may be closed or dropped next. Its error, if any, is the
	// lesser one; the stamp says what was written.
	defer func() { _ = cr.load.Wait() }()
	w := p.newRestoreWatch(st, log)
	for {
		fetches, err := w.poll(ctx, cr.cl)
		if err != nil {
			// What is applied stays, stamped up to the last marker:
			// the next restore resumes there.
			cr.load.Rollback()
			if cerr := cr.settle(ctx, cr.markerEnd); cerr != nil {
				return 0, errors.Join(err, cerr)
			}
			return 0, err
		}
		for _, r := range fetches.Records() {
			if out, done, err := cr.record(ctx, r); done || err != nil {
				return out, err
			}
		}
		w.report(cr.read, cr.end-cr.first, cr.first >= 0)
	}
}

// changelogRestore is one run of restoreChangelog: the changelog partition
// it reads up to its sentinel, and what it has applied so far. Its chunks
// are committed to Pebble with the input offset of the last marker
// applied, so that the stamp never claims a transaction it has not seen
// confirmed.
type changelogRestore struct {
	p     *Processor
	st    *partState
	to    int64 // the group's committed offset: the restore's target
	log   zerolog.Logger
	stamp state.Stamp // as the restore found it
	start time.Time
	cp    int32       // the changelog partition
	cl    *kgo.Client // reads cp from stamp.Changelog (open)
	end   int64       // the sentinel's offset (open)

	// load buffers the changes and writes them in bulk; the changes
	// since its last Mark wait for their transaction's marker.
	load      *state.Loader
	input     int64 // the input offset of the last marker applied
	markerEnd int64 // the offset after the last marker applied
	ahead     bool  // changes written ahead of their marker wait for it
	applied   int64 // the partition's records applied
	read      int64 // records read, for progress
	skipped   int64 // unreadable records the partition does not depend on
	first     int64 // the first offset read; -1: none yet
}

// newChangelogRestore starts a changelog restore of st towards to from
// st's stamp.
func (p *Processor) newChangelogRestore(st *partState, to int64, log zerolog.Logger) *changelogRestore {
	stamp := st.part.Stamp()
	return &changelogRestore{
		p: p, st: st, to: to, log: log, stamp: stamp, start: time.Now(),
		cp:    st.tp.partition % p.clParts,
		input: stamp.Input, markerEnd: stamp.Changelog, ahead: stamp.Ahead,
		first: -1,
	}
}

// open creates the restore's client, reading the changelog partition from
// the stamp's changelog offset, and writes the sentinel that tells the
// restore when it has read everything committed before it. The client is
// closed again if the sentinel cannot be written.
func (cr *changelogRestore) open(ctx context.Context) error {
	p := cr.p
	from := cr.stamp.Changelog
	cl, err := p.changelogReader(cr.cp, from)
	if err != nil {
		return err
	}
	id := fmt.Appendf(nil, "%s/%s/%d/%d", p.txnID, cr.st.tp.topic, cr.st.tp.partition, cr.start.UnixNano())
	sentinel := &kgo.Record{Topic: p.opts.ChangelogTopic, Partition: cr.cp, Key: state.SentinelKey(id)}
	sctx, cancel := context.WithTimeout(ctx, p.opts.RestoreStallTimeout)
	err = cl.ProduceSync(sctx, sentinel).FirstErr()
	cancel()
	if err != nil {
		cl.Close()
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w: %w", errRestoreStalled, err)
		}
		return fmt.Errorf("writing a sentinel to changelog %s/%d: %w", p.opts.ChangelogTopic, cr.cp, err)
	}
	cr.end = sentinel.Offset
	if cr.cold() {
		// Past what has expired (seek.go).
		if at := cr.seekStart(ctx, cl); at > from {
			cl.Close()
			if cl, err = p.changelogReader(cr.cp, at); err != nil {
				return err
			}
			cr.log.Info().Int64("changelog_offset", at).Msg("cold restore: the partition's changelog records before this offset are of retired keys; reading from there")
			from = at
		}
	}
	cr.cl = cl
	cr.log.Info().Str("changelog", p.opts.ChangelogTopic).Int32("changelog_partition", cr.cp).Int64("from", from).Int64("to", cr.end).
		Int64("input", cr.stamp.Input).Int64("committed", cr.to).Msg("restoring state from the changelog")
	return nil
}

// changelogReader returns a client reading changelog partition cp from
// offset from, under read_committed, that also writes (the sentinel).
func (p *Processor) changelogReader(cp int32, from int64) (*kgo.Client, error) {
	cl, err := kgo.NewClient(append(p.clientOpts(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{p.opts.ChangelogTopic: {cp: kgo.NewOffset().At(from)}}),
		// One partition, briefly: a fetch session saves nothing, and
		// franz-go's Close races a fetch in flight on the session's
		// fields (found by the race detector when a restore stops).
		kgo.DisableFetchSessions(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxPartitionBytes(restoreFetchBytes),
		kgo.FetchMaxBytes(restoreFetchBytes),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)...)
	if err != nil {
		return nil, fmt.Errorf("creating changelog restore client: %w", err)
	}
	return cl, nil
}

// cold reports whether the restore starts from nothing: an empty
// keyspace that never read the changelog.
func (cr *changelogRestore) cold() bool {
	return cr.stamp == state.Stamp{EventTime: math.MinInt64}
}

// Bounds of seekStart: it reads the changelog partition's last
// seekProbeRecords records before its sentinel, a first sixteenth of
// them and then all if the marker is not in the first, for at most
// seekProbeTimeout.
const (
	seekProbeRecords = 1 << 20
	seekProbeTimeout = 10 * time.Second
)

// seekStart returns the changelog offset a cold restore may start at: the
// first record at or after the seek of the partition's marker at input
// offset to (seek.go), found among the changelog partition's last records;
// 0 (read from the start) when there is none, it has no seek, the broker
// set its timestamps (LogAppendTime), or the probe fails. Any doubt reads
// more, never less.
func (cr *changelogRestore) seekStart(ctx context.Context, cl *kgo.Client) int64 {
	ctx, cancel := context.WithTimeout(ctx, seekProbeTimeout)
	defer cancel()
	seek, found := int64(0), false
	for _, n := range []int64{seekProbeRecords / 16, seekProbeRecords} {
		if seek, found = cr.probeTail(ctx, max(cr.end-n, 0)); found || n >= cr.end {
			break
		}
	}
	if seek <= 0 {
		return 0
	}
	topic := cr.p.opts.ChangelogTopic
	offs, err := kadm.NewClient(cl).ListOffsetsAfterMilli(ctx, seek, topic)
	if err != nil {
		return 0
	}
	if o, ok := offs.Lookup(topic, cr.cp); ok && o.Err == nil && o.Offset > 0 && o.Offset <= cr.end {
		return o.Offset
	}
	return 0
}

// probeTail reads the changelog partition from offset from to the
// restore's sentinel and returns the seek of the partition's last marker
// there (markerSeek); found reports that there was one.
func (cr *changelogRestore) probeTail(ctx context.Context, from int64) (seek int64, found bool) {
	pc, err := cr.p.changelogReader(cr.cp, from)
	if err != nil {
		return 0, false
	}
	defer pc.Close()
	for {
		fetches := pc.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return 0, false
		}
		for _, r := range fetches.Records() {
			if r.Offset >= cr.end {
				return seek, found
			}
			if s, ok := cr.markerSeek(r); ok {
				seek, found = s, true
			}
		}
	}
}

// markerSeek returns the seek of r if it is the partition's marker: its
// HeaderSeek if the marker is at the restore's target offset, -1 if it is
// beyond (the target is stale, or the offsets moved back: no seek).
func (cr *changelogRestore) markerSeek(r *kgo.Record) (int64, bool) {
	c, err := state.ParseChangeKey(r.Key)
	if err != nil || c.Kind != state.ChangeMarker || c.Topic != cr.st.tp.topic || c.Partition != cr.st.tp.partition {
		return 0, false
	}
	if err := c.DecodeValue(r.Value); err != nil || c.Input != cr.to {
		return -1, true
	}
	if r.Attrs.TimestampType() != 0 {
		return -1, true // LogAppendTime: not the writer's clock
	}
	for _, h := range r.Headers {
		if h.Key == HeaderSeek {
			s, err := strconv.ParseInt(string(h.Value), 10, 64)
			if err != nil || s <= 0 || s > r.Timestamp.UnixMilli() {
				return -1, true
			}
			return s, true
		}
	}
	return 0, true
}

// record applies one changelog record: a change of the partition (an
// entry or a tombstone) waits for its marker, a marker applies the changes
// it confirms, and the sentinel ends the restore; records of other
// partitions are passed over. done reports that the restore ended, with
// out; an error ends it too.
func (cr *changelogRestore) record(ctx context.Context, r *kgo.Record) (out changelogOutcome, done bool, err error) {
	if cr.first < 0 {
		cr.first = r.Offset
	}
	cr.read++
	c, err := state.ParseChangeKey(r.Key)
	if err != nil {
		if errors.Is(err, state.ErrVersion) && c.Topic == cr.st.tp.topic && c.Partition == cr.st.tp.partition {
			// A kind a newer kdedup writes, of this partition's
			// state: it cannot be left out.
			return 0, true, fmt.Errorf("changelog %s/%d offset %d: %w", r.Topic, r.Partition, r.Offset, err)
		}
		// Not a record kdedup wrote, or another partition's:
		// this partition's state does not depend on it.
		cr.skipped++
		return 0, false, nil
	}
	if c.Kind == state.ChangeSentinel {
		if r.Offset < cr.end {
			return 0, false, nil // another restore's
		}
		out, err := cr.sentinel(ctx, r)
		return out, true, err
	}
	if c.Topic != cr.st.tp.topic || c.Partition != cr.st.tp.partition {
		return 0, false, nil
	}
	if err := c.DecodeValue(r.Value); err != nil {
		// The partition's own record: it cannot be left out.
		return 0, true, fmt.Errorf("changelog %s/%d offset %d: %w", r.Topic, r.Partition, r.Offset, err)
	}
	cr.applied++
	if c.Kind != state.ChangeMarker {
		return 0, false, cr.change(ctx, r, c)
	}
	return cr.marker(ctx, r, c)
}

// change buffers c, an entry or a tombstone, in the Loader, where it
// waits for the transaction's marker to show it committed at or below to.
// When the Loader is full it writes them ahead of their marker, to bound
// memory (see restoreChangelog): the input offset stays at the last
// marker, and the stamp says Ahead until a marker confirms them.
func (cr *changelogRestore) change(ctx context.Context, r *kgo.Record, c state.Change) error {
	var err error
	if c.Deleted {
		err = cr.load.Delete(c.Hash)
	} else {
		err = cr.load.Put(c.Hash, c.Entry)
	}
	if err != nil || !cr.load.Full() {
		return err
	}
	cr.ahead = true
	return cr.commit(ctx, r.Offset+1)
}

// marker applies the changes of the transaction whose marker c is, if it
// committed at or below to, and ends the restore when the state reflects
// to. A marker beyond to ends it too, without those changes and stamped
// just after the last marker applied: beyondTarget tells a stale target
// from offsets moved back.
func (cr *changelogRestore) marker(ctx context.Context, r *kgo.Record, c state.Change) (changelogOutcome, bool, error) {
	if c.Input > cr.to {
		// A transaction beyond the committed offset: leave its
		// changes out, and stop just after the last marker applied.
		cr.load.Rollback()
		if err := cr.settle(ctx, cr.markerEnd); err != nil {
			return 0, true, err
		}
		out, err := cr.p.beyondTarget(ctx, cr.cl, cr.st, cr.to, c.Input, cr.log)
		return out, true, err
	}
	cr.load.Mark()
	cr.input = c.Input
	cr.markerEnd = r.Offset + 1
	cr.ahead = false // every change before this marker is confirmed
	cr.load.SetEventTime(max(cr.load.EventTime(), c.EventTime))
	if cr.input == cr.to {
		// The state reflects the committed input.
		if err := cr.finish(ctx, r.Offset+1); err != nil {
			return 0, true, err
		}
		return changelogReached, true, nil
	}
	if cr.load.Full() {
		if err := cr.commit(ctx, r.Offset+1); err != nil {
			return 0, true, err
		}
	}
	return 0, false, nil
}

// sentinel ends the restore at its own sentinel r: everything committed
// before it is read, so the changes pending since the last marker belong
// to no committed transaction and are dropped. The outcome is decided from what
// was applied: changes still ahead of their marker were never confirmed
// (changelogUnconfirmed); otherwise the changelog reached to
// (changelogReached) or ends before it (changelogShort).
func (cr *changelogRestore) sentinel(ctx context.Context, r *kgo.Record) (changelogOutcome, error) {
	cr.load.Rollback()
	if cr.skipped > 0 {
		cr.log.Warn().Int64("records", cr.skipped).Msg("changelog records kdedup cannot read were skipped")
	}
	if err := cr.finish(ctx, r.Offset+1); err != nil {
		return 0, err
	}
	if cr.ahead {
		return changelogUnconfirmed, nil
	}
	if cr.st.part.Stamp().Input == cr.to {
		return changelogReached, nil
	}
	return changelogShort, nil
}

// commit starts writing what the Loader holds, stamped with the last
// marker's input offset, the changelog position next and whether changes
// wait ahead of their marker.
func (cr *changelogRestore) commit(ctx context.Context, next int64) error {
	cr.load.SetAhead(cr.ahead)
	return cr.load.Commit(ctx, cr.input, next)
}

// settle commits as commit does and waits until the partition's state
// and stamp are written.
func (cr *changelogRestore) settle(ctx context.Context, next int64) error {
	if err := cr.commit(ctx, next); err != nil {
		return err
	}
	return cr.load.Wait()
}

// finish commits the restore. The Loader kept the key count exact.
func (cr *changelogRestore) finish(ctx context.Context, next int64) error {
	if err := cr.settle(ctx, next); err != nil {
		return err
	}
	cr.p.restored(cr.st, cr.log, "changelog", cr.applied, cr.start)
	return nil
}

// beyondTarget decides what a marker of input offset beyond, past the
// committed offset to, means: the group's coordinator is asked for the
// partition's committed offset. Beyond to there, to was stale: another
// member committed past it and owns the partition, or will
// (errStaleTarget, the session rejoins). At to, or none: the offsets were
// moved back (changelogMovedBack).
func (p *Processor) beyondTarget(ctx context.Context, cl *kgo.Client, st *partState, to, beyond int64, log zerolog.Logger) (changelogOutcome, error) {
	if p.gone(st.tp) {
		return 0, errRevoked
	}
	// Stable: the changelog's commit marker can be written before the
	// offsets' one.
	fctx, cancel := context.WithTimeout(ctx, p.opts.RestoreStallTimeout)
	offs, err := stableOffsets(fctx, cl, p.opts.Group)
	cancel()
	if errors.Is(err, kerr.UnstableOffsetCommit) {
		return 0, fmt.Errorf("%w: %s/%d: the group's offsets are being committed: %w", errStaleTarget, st.tp.topic, st.tp.partition, err)
	}
	if err != nil {
		return 0, fmt.Errorf("fetching the committed offsets of group %s: %w", p.opts.Group, err)
	}
	now := int64(-1)
	if o, ok := offs.Lookup(st.tp.topic, st.tp.partition); ok {
		if errors.Is(o.Err, kerr.UnstableOffsetCommit) {
			return 0, fmt.Errorf("%w: %s/%d: an offset commit is pending: %w", errStaleTarget, st.tp.topic, st.tp.partition, o.Err)
		}
		if o.Err != nil {
			return 0, fmt.Errorf("fetching the committed offset of %s/%d: %w", st.tp.topic, st.tp.partition, o.Err)
		}
		now = o.At
	}
	if now > to {
		log.Warn().Int64("committed", to).Int64("changelog", beyond).Int64("group", now).Msg("restore target is stale: another member committed beyond it")
		return 0, fmt.Errorf("%w: %s/%d restored towards offset %d, but the group committed %d", errStaleTarget, st.tp.topic, st.tp.partition, to, now)
	}
	return changelogMovedBack, nil
}

// restoreWatch bounds a restore: it polls in short steps so that a
// revocation of the partition is noticed within a second, gives up after
// RestoreStallTimeout without a record, and reports progress every second.
type restoreWatch struct {
	p        *Processor
	st       *partState
	log      zerolog.Logger
	start    time.Time
	progress time.Time // the last record read
	reported time.Time
}

func (p *Processor) newRestoreWatch(st *partState, log zerolog.Logger) *restoreWatch {
	now := time.Now()
	return &restoreWatch{p: p, st: st, log: log, start: now, progress: now, reported: now}
}

// poll returns the restore client's next fetches, or why the restore must
// stop.
func (w *restoreWatch) poll(ctx context.Context, cl *kgo.Client) (kgo.Fetches, error) {
	for {
		if w.p.gone(w.st.tp) {
			return nil, errRevoked
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fetches := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if fetches.IsClientClosed() {
			return nil, errors.New("restore client closed")
		}
		fetches.EachError(func(t string, n int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				w.log.Warn().Err(err).Str("restoring_from", t).Msg("restore fetch error")
			}
		})
		if fetches.NumRecords() > 0 {
			w.progress = time.Now()
			return fetches, nil
		}
		if idle := time.Since(w.progress); idle > w.p.opts.RestoreStallTimeout {
			return nil, fmt.Errorf("%w: nothing read for %v (a hanging transaction, or an offline partition?)", errRestoreStalled, idle.Round(time.Second))
		}
	}
}

// report reports progress (done of total) once a second.
func (w *restoreWatch) report(done, total int64, started bool) {
	if started && time.Since(w.reported) > time.Second {
		w.reported = time.Now()
		w.p.progress(w.st, w.log, done, total, w.start)
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
		kgo.DisableFetchSessions(), // as restoreChangelog's client
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)...)
	if err != nil {
		return fmt.Errorf("creating restore client: %w", err)
	}
	defer cl.Close()

	batch := st.part.NewBatch()
	var replayed, inChunk int64
	w := p.newRestoreWatch(st, log)
	for {
		fetches, err := w.poll(ctx, cl)
		if err != nil {
			batch.Discard()
			return err
		}
		for _, r := range fetches.Records() {
			if r.Offset >= to {
				if err := batch.Commit(to, st.part.Stamp().Changelog); err != nil {
					return err
				}
				p.restored(st, log, "input", replayed, start)
				return nil
			}
			if _, err := st.eng.Decide(batch, record(p.unwrapped(st, r), &st.hdrs)); err != nil {
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
		w.report(replayed, total, true)
	}
}
