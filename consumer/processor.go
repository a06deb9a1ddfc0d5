package consumer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/config"
	"github.com/kdedup/kdedup/dedup"
	"github.com/kdedup/kdedup/producer"
	"github.com/kdedup/kdedup/state"
)

// Stream is one deduplicated stream as the processor runs it.
type Stream struct {
	Rules  *dedup.Rules
	Input  string
	Output string
	// Repartition, if set, is the topic the input is re-keyed into by the
	// scoped idempotency key (in the transaction that consumes the input);
	// the stream then deduplicates that topic.
	Repartition string
}

// Observer receives the processor's measurements. Methods are called from
// the processing goroutine and must not block.
type Observer interface {
	// Decided counts a decision of stream.
	Decided(stream string, r dedup.Reason)
	// Transaction reports an ended transaction (or, under at_least_once,
	// an offset commit): whether it committed, how long ending it took,
	// and how many input records it carried.
	Transaction(committed bool, took time.Duration, records int)
	// Restored reports the progress of a partition's restore: records
	// replayed so far out of total.
	Restored(topic string, partition int32, done, total int64)
	// Keys reports the keys stored for a partition.
	Keys(topic string, partition int32, n int64)
	// Rebuilt reports a client session ended by a failure and rebuilt
	// (rejoining the group), with why: one of the Rebuild* reasons.
	Rebuilt(reason string)
}

// Why a session was rebuilt (Observer.Rebuilt).
const (
	// RebuildUnknownOutcome: a transaction's outcome is unknown (its End
	// or flush failed), or the client failed otherwise.
	RebuildUnknownOutcome = "unknown_outcome"
	// RebuildPartitionStalled: a fetch error left a partition unconsumed
	// (franz-go drops a partition whose committed offset it cannot fetch).
	RebuildPartitionStalled = "partition_stalled"
	// RebuildRestoreStalled: a restore made no progress for
	// Options.RestoreStallTimeout; the session left the group.
	RebuildRestoreStalled = "restore_stalled"
	// RebuildStaleOffsets: a restore met the changelog of a transaction
	// beyond the committed offset this session knows, while the group's
	// coordinator knows a later one: another member owns the partition.
	RebuildStaleOffsets = "stale_offsets"
)

var (
	// errPartitionStalled: see RebuildPartitionStalled.
	errPartitionStalled = errors.New("consumer: a partition stopped being consumed")
	// errRestoreStalled: see RebuildRestoreStalled.
	errRestoreStalled = errors.New("consumer: restore made no progress")
	// errStaleTarget: see RebuildStaleOffsets.
	errStaleTarget = errors.New("consumer: the committed offset this session knows is stale")
	// errRevoked: the partition being restored was revoked meanwhile; the
	// restore stops (what it committed to Pebble stays, stamped).
	errRevoked = errors.New("consumer: partition revoked during its restore")
)

// rebuildReason classifies the error a session ended with.
func rebuildReason(err error) string {
	switch {
	case errors.Is(err, errPartitionStalled):
		return RebuildPartitionStalled
	case errors.Is(err, errRestoreStalled):
		return RebuildRestoreStalled
	case errors.Is(err, errStaleTarget):
		return RebuildStaleOffsets
	}
	return RebuildUnknownOutcome
}

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

type nopObserver struct{}

func (nopObserver) Decided(string, dedup.Reason)         {}
func (nopObserver) Transaction(bool, time.Duration, int) {}
func (nopObserver) Restored(string, int32, int64, int64) {}
func (nopObserver) Keys(string, int32, int64)            {}
func (nopObserver) Rebuilt(string)                       {}

// Options configure a Processor.
type Options struct {
	// Brokers are the seed brokers.
	Brokers []string
	// Group is the consumer group; the transactional id is
	// Group + "-" + InstanceID.
	Group      string
	InstanceID string
	// Guarantee is config.ExactlyOnce or config.AtLeastOnce.
	Guarantee string
	// CommitInterval bounds a transaction.
	CommitInterval time.Duration
	// AuditTopic receives every record that is not first-seen.
	AuditTopic string
	// ChangelogTopic receives every state change, in the transaction that
	// made it, and is where a partition's state is restored from when it
	// moves (package state's changelog format).
	ChangelogTopic string
	// RetireLimit caps the expired keys retired (deleted, with a changelog
	// tombstone) per partition per transaction, so that a burst of expiry
	// does not make one transaction huge. Default: 1,000.
	RetireLimit int
	Streams     []Stream
	// Partitions are the partition counts of every input, output and the
	// audit topic (producer.EnsureTopics).
	Partitions producer.Partitions
	Store      *state.Store
	Log        zerolog.Logger
	// Observer receives measurements; nil discards them.
	Observer Observer
	// SessionTimeout is the group session timeout. Default: 45s.
	SessionTimeout time.Duration
	// TransactionTimeout must stay below SessionTimeout, so that the
	// coordinator aborts the open transaction of a frozen instance before
	// the group gives its partitions away. Default: 30s.
	TransactionTimeout time.Duration
	// ClientOpts are added to every client (security, tests).
	ClientOpts []kgo.Opt
	// MaxPollRecords caps the records one poll returns. Default: 10,000.
	MaxPollRecords int
	// RestoreStallTimeout bounds how long a restore may go without
	// progress (no changelog or input record read, its sentinel not
	// written) before it gives up: a hanging transaction on the changelog
	// (read_committed stops at it) or an offline changelog partition must
	// not hold the loop, and the partitions, forever. The session then
	// leaves the group, so that the partitions can move, and rejoins.
	// Default: 2 minutes, longer than a transaction timeout, so that a
	// transaction of a crashed instance is aborted by the coordinator
	// before a restore waiting on it gives up.
	RestoreStallTimeout time.Duration
	// Limits is what each output topic and the audit topic refuse
	// (producer.TopicLimits): producer batches are sized to their
	// max.message.bytes, and records they would refuse are audited
	// instead of produced. A topic not in it has the zero Limits: no
	// bounds known, batches of producer.DefaultMaxMessageBytes.
	Limits map[string]producer.Limits
}

// ErrOptions is returned by New for unusable options.
var ErrOptions = errors.New("consumer: invalid options")

// Processor is the exactly-once (or at-least-once) deduplicating loop of
// one instance: one transactional client consumes every input in the group,
// decides each record against its partition's state, produces the output
// and audit records and commits the input offsets in one transaction per
// CommitInterval; only then is the state written to Pebble with its offset
// stamp.
//
// Run is called once; Ready may be called from any goroutine.
type Processor struct {
	opts     Options
	log      zerolog.Logger
	obs      Observer
	streams  map[string]*streamRun // by the topic deduplicated: the input, or the repartition topic
	forwards map[string]*streamRun // by input topic, for streams that repartition
	txnID    string
	clParts  int32 // partitions of the changelog topic

	parts map[tp]*partState
	// assigned are the partitions the group gave this session, as of the
	// last applyRebalances: records of others are never decided, and a
	// partition revoked while earlier ones restore is skipped.
	assigned map[tp]bool
	// cl is the running session's client (nil between sessions), for
	// restores to notice a revocation (gone).
	cl client
	// stallRejoins is when each partition last made the session rejoin
	// after a fetch error (stalled), across sessions.
	stallRejoins map[tp]time.Time

	events   sync.Mutex // guards pending
	pending  []rebalanceEvent
	ready    atomic.Bool
	restores atomic.Int32

	// Per transaction.
	failed   atomic.Bool     // a produce failed: the transaction must abort
	failMu   sync.Mutex      // guards failErr and refusals
	failErr  error           // the first produce failure
	refusals map[coord]error // input records whose output or audit record a topic refused, with the error; pruned on commit
	fwdNext  map[tp]int64    // per forwarded input partition, the offset after its last record in the open transaction
	hdrs     []dedup.Header  // scratch
	txnStart time.Time
	txnRecs  int
	inTxn    bool
	rewind   bool // abort the open transaction to restore a partition first
}

type tp struct {
	topic     string
	partition int32
}

type coord struct {
	tp
	offset int64
	audit  bool // the refused record was the audit record
}

type streamRun struct {
	Stream
	eng        *dedup.Engine
	inParts    int32
	repParts   int32 // partitions of the repartition topic
	outParts   int32
	auditParts int32
}

// partState is one assigned partition: its keyspace, the open
// transaction's batch, and whether its stamp must be checked against the
// committed offset before its next record is decided.
type partState struct {
	s     *streamRun
	tp    tp
	part  *state.Partition
	batch *state.Batch
	next  int64 // offset after the batch's last record
	check bool
	// clNext is the offset after the last changelog record the open
	// transaction wrote for the partition (0: none yet); produce promises
	// raise it.
	clNext atomic.Int64
}

type rebalanceEvent struct {
	assigned bool
	parts    map[string][]int32
}

// New checks the options and returns a Processor.
func New(opts Options) (*Processor, error) {
	if opts.SessionTimeout == 0 {
		opts.SessionTimeout = 45 * time.Second
	}
	if opts.TransactionTimeout == 0 {
		opts.TransactionTimeout = 30 * time.Second
	}
	if opts.MaxPollRecords == 0 {
		opts.MaxPollRecords = 10_000
	}
	if opts.RetireLimit == 0 {
		opts.RetireLimit = 1_000
	}
	if opts.RestoreStallTimeout == 0 {
		opts.RestoreStallTimeout = 2 * time.Minute
	}
	var errs []error
	if len(opts.Brokers) == 0 {
		errs = append(errs, errors.New("no brokers"))
	}
	if opts.Group == "" || opts.InstanceID == "" {
		errs = append(errs, errors.New("group and instance id are required"))
	}
	if opts.Guarantee != config.ExactlyOnce && opts.Guarantee != config.AtLeastOnce {
		errs = append(errs, fmt.Errorf("guarantee %q", opts.Guarantee))
	}
	if opts.CommitInterval <= 0 {
		errs = append(errs, errors.New("commit interval must be positive"))
	}
	if opts.TransactionTimeout >= opts.SessionTimeout {
		errs = append(errs, fmt.Errorf("transaction timeout %v must be below the session timeout %v", opts.TransactionTimeout, opts.SessionTimeout))
	}
	if opts.RestoreStallTimeout <= opts.TransactionTimeout {
		errs = append(errs, fmt.Errorf("restore stall timeout %v must be above the transaction timeout %v, so that a crashed instance's transaction is aborted before a restore waiting on it gives up", opts.RestoreStallTimeout, opts.TransactionTimeout))
	}
	if opts.Store == nil || len(opts.Streams) == 0 || opts.AuditTopic == "" || opts.ChangelogTopic == "" {
		errs = append(errs, errors.New("store, streams, audit and changelog topics are required"))
	}
	p := &Processor{
		opts:         opts,
		log:          opts.Log,
		obs:          opts.Observer,
		streams:      map[string]*streamRun{},
		forwards:     map[string]*streamRun{},
		parts:        map[tp]*partState{},
		assigned:     map[tp]bool{},
		stallRejoins: map[tp]time.Time{},
		refusals:     map[coord]error{},
		fwdNext:      map[tp]int64{},
		txnID:        opts.Group + "-" + opts.InstanceID,
		clParts:      opts.Partitions[opts.ChangelogTopic],
	}
	if p.clParts == 0 && opts.ChangelogTopic != "" {
		errs = append(errs, fmt.Errorf("partition count of the changelog %s unknown", opts.ChangelogTopic))
	}
	if p.obs == nil {
		p.obs = nopObserver{}
	}
	for _, s := range opts.Streams {
		sr := &streamRun{
			Stream:     s,
			eng:        dedup.NewEngine(s.Rules),
			inParts:    opts.Partitions[s.Input],
			outParts:   opts.Partitions[s.Output],
			auditParts: opts.Partitions[opts.AuditTopic],
		}
		if sr.inParts == 0 || sr.outParts == 0 || sr.auditParts == 0 {
			errs = append(errs, fmt.Errorf("stream %s: partition counts of %s, %s and %s unknown", s.Rules.Name(), s.Input, s.Output, opts.AuditTopic))
		}
		if s.Repartition != "" {
			sr.repParts = opts.Partitions[s.Repartition]
			if sr.repParts == 0 {
				errs = append(errs, fmt.Errorf("stream %s: partition count of %s unknown", s.Rules.Name(), s.Repartition))
			}
			p.streams[s.Repartition] = sr
			p.forwards[s.Input] = sr
			continue
		}
		p.streams[s.Input] = sr
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrOptions, errors.Join(errs...))
	}
	return p, nil
}

// Ready reports whether the processor is consuming with every assigned
// partition's state restored.
func (p *Processor) Ready() bool { return p.ready.Load() && p.restores.Load() == 0 }

func (p *Processor) inputs() []string {
	var ts []string
	for t := range p.streams {
		ts = append(ts, t)
	}
	for t := range p.forwards {
		ts = append(ts, t)
	}
	return ts
}

// clientOpts are the options every client of the processor shares.
func (p *Processor) clientOpts() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(p.opts.Brokers...),
		kgo.WithLogger(kgoLogger{p.log}),
		kgo.MetadataMinAge(250 * time.Millisecond),
	}
	return append(opts, p.opts.ClientOpts...)
}

func (p *Processor) groupOpts() []kgo.Opt {
	opts := append(p.clientOpts(),
		kgo.ConsumerGroup(p.opts.Group),
		kgo.ConsumeTopics(p.inputs()...),
		kgo.InstanceID(p.opts.InstanceID),
		kgo.SessionTimeout(p.opts.SessionTimeout),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchMaxBytesFn(func(topic string) int32 { return p.opts.Limits[topic].BatchBytes() }),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { p.rebalanced(true, m) }),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { p.rebalanced(false, m) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { p.rebalanced(false, m) }),
	)
	if p.opts.Guarantee == config.ExactlyOnce {
		opts = append(opts,
			kgo.TransactionalID(p.txnID),
			kgo.TransactionTimeout(p.opts.TransactionTimeout),
		)
	} else {
		opts = append(opts, kgo.DisableAutoCommit())
	}
	return opts
}

// rebalanced runs in the group's goroutine: it only queues the event for
// the processing loop, which owns the partitions.
func (p *Processor) rebalanced(assigned bool, m map[string][]int32) {
	if len(m) == 0 {
		return
	}
	p.events.Lock()
	p.pending = append(p.pending, rebalanceEvent{assigned, m})
	p.events.Unlock()
}

// applyRebalances applies queued assignments and revocations: a revoked
// partition's batch is dropped (its transaction aborts) and its keyspace
// closed; an assigned one is checked before its next record.
func (p *Processor) applyRebalances() {
	p.events.Lock()
	evs := p.pending
	p.pending = nil
	p.events.Unlock()
	for _, ev := range evs {
		for topic, ps := range ev.parts {
			for _, n := range ps {
				key := tp{topic, n}
				if ev.assigned {
					p.log.Info().Str("topic", topic).Int32("partition", n).Msg("partition assigned")
					p.assigned[key] = true
					if st, ok := p.parts[key]; ok {
						st.check = true
					}
					continue
				}
				p.log.Info().Str("topic", topic).Int32("partition", n).Msg("partition revoked")
				delete(p.assigned, key)
				if st, ok := p.parts[key]; ok {
					if st.batch != nil {
						st.batch.Discard()
					}
					st.part.Close()
					delete(p.parts, key)
				}
			}
		}
	}
}

// gone reports whether key was revoked or lost since the last
// applyRebalances: a restore, which runs in the processing goroutine while
// the group's goroutine goes on, checks it to give the partition up at
// once. Either its revocation is queued, or the session's client no longer
// knows its committed offset: a GroupTransactSession passes on only the
// first revocation before the next End, but its client drops a revoked
// partition's entry whatever the callback.
func (p *Processor) gone(key tp) bool {
	if c := p.cl; c != nil {
		if _, known := p.committed(c, key); !known {
			return true
		}
	}
	return p.revokedPending(key)
}

// revokedPending reports whether a revocation (or loss) of key is queued
// but not yet applied.
func (p *Processor) revokedPending(key tp) bool {
	p.events.Lock()
	defer p.events.Unlock()
	for _, ev := range p.pending {
		if ev.assigned {
			continue
		}
		for _, n := range ev.parts[key.topic] {
			if n == key.partition {
				return true
			}
		}
	}
	return false
}

// Run processes until ctx ends, then finishes or aborts the open
// transaction, leaves the group and returns nil. Failures of the brokers
// or the client never end Run: the session is rebuilt and processing
// resumes from the committed offsets.
func (p *Processor) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		err := p.session(ctx)
		p.ready.Store(false)
		if ctx.Err() != nil {
			p.closePartitions()
			return nil
		}
		reason := rebuildReason(err)
		p.obs.Rebuilt(reason)
		p.log.Warn().Err(err).Str("reason", reason).Dur("retry_in", backoff).Msg("rebuilding the client session")
		select {
		case <-ctx.Done():
			p.closePartitions()
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (p *Processor) closePartitions() {
	for k, st := range p.parts {
		if st.batch != nil {
			st.batch.Discard()
		}
		st.part.Close()
		delete(p.parts, k)
	}
}

// session runs one client's lifetime. It returns nil when ctx ends, an
// error when the client must be rebuilt.
func (p *Processor) session(ctx context.Context) (err error) {
	// Whatever the last session left must be checked again: its
	// transaction's outcome may be unknown.
	for _, st := range p.parts {
		if st.batch != nil {
			st.batch.Discard()
			st.batch = nil
		}
		st.check = true
	}
	p.events.Lock()
	p.pending = nil
	p.events.Unlock()
	clear(p.assigned)
	p.resetTxn()
	if p.opts.Guarantee == config.ExactlyOnce {
		sess, serr := kgo.NewGroupTransactSession(p.groupOpts()...)
		if serr != nil {
			return fmt.Errorf("creating transactional session %s: %w", p.txnID, serr)
		}
		defer func() { p.leave(sess.Close, p.giveBack(ctx, err)) }()
		// Fence at once: InitProducerID aborts whatever transaction an
		// earlier session of this transactional id left open (a crash, an
		// unknown outcome). Waiting for the first record would deadlock:
		// the group cannot hand out offsets while that transaction's
		// offset commit is pending, so no record would ever come before
		// the transaction timed out.
		ictx, cancel := context.WithTimeout(ctx, p.opts.SessionTimeout)
		_, _, ierr := sess.Client().ProducerID(ictx)
		cancel()
		if ierr != nil {
			return fmt.Errorf("initializing transactional id %s (fencing earlier sessions): %w", p.txnID, ierr)
		}
		return p.loop(ctx, txnClient{sess})
	}
	cl, cerr := kgo.NewClient(p.groupOpts()...)
	if cerr != nil {
		return fmt.Errorf("creating client: %w", cerr)
	}
	defer func() { p.leave(cl.Close, p.giveBack(ctx, err)) }()
	return p.loop(ctx, &alosClient{cl: cl})
}

// giveBack reports whether a session ending with err leaves the group, so
// that its partitions move at once: on shutdown (ctx ended, by whatever
// path the loop returned), after a restore that stalled, and after one
// that met a changelog record in a format this build does not read (the
// partitions may fare better elsewhere, with another instance or a newer
// kdedup; this instance rejoins after a backoff).
func (p *Processor) giveBack(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, errRestoreStalled) || errors.Is(err, state.ErrVersion)
}

// leave closes the client and, if leaveGroup, removes this static member
// from the group, so that its partitions move at once rather than after
// the session timeout, and makes sure no transaction of it is left open.
//
// The order matters: the client closes first (a static member's close
// sends no LeaveGroup and waits for nothing); removing the member while
// its own client still ran would make that client rejoin, and its close
// wait on the rebalance.
func (p *Processor) leave(closeFn func(), leaveGroup bool) {
	closeFn()
	if !leaveGroup {
		return
	}
	admCl, err := kgo.NewClient(p.clientOpts()...)
	if err != nil {
		p.log.Warn().Err(err).Msg("leaving the group")
		return
	}
	lctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	resp, err := kadm.NewClient(admCl).LeaveGroup(lctx, kadm.LeaveGroup(p.opts.Group).InstanceIDs(p.opts.InstanceID).Reason("kdedup shutting down"))
	cancel()
	admCl.Close()
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		p.log.Warn().Err(err).Msg("leaving the group")
	} else {
		p.log.Info().Str("group", p.opts.Group).Msg("left the group")
	}
	if p.opts.Guarantee == config.ExactlyOnce {
		p.fence()
	}
}

// fence initialises the transactional id once more with a fresh client:
// the coordinator aborts any transaction of it still open, so that no
// transaction outlives a stop, whatever happened to the last End. A
// hanging transaction would stall every read_committed reader of the
// outputs until the transaction timeout.
func (p *Processor) fence() {
	cl, err := kgo.NewClient(append(p.clientOpts(),
		kgo.TransactionalID(p.txnID),
		kgo.TransactionTimeout(p.opts.TransactionTimeout),
	)...)
	if err != nil {
		p.log.Warn().Err(err).Msg("fencing the transactional id on shutdown")
		return
	}
	defer cl.Close()
	fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := cl.ProducerID(fctx); err != nil {
		p.log.Warn().Err(err).Str("transactional_id", p.txnID).Msg("fencing the transactional id on shutdown")
		return
	}
	p.log.Info().Str("transactional_id", p.txnID).Msg("no transaction left open")
}

// client is what the loop needs of a transactional session or of a plain
// at-least-once client.
type client interface {
	PollRecords(ctx context.Context, n int) kgo.Fetches
	Begin() error
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
	// Flush waits until every record produced so far succeeded or failed.
	Flush(ctx context.Context) error
	// End ends the transaction (at-least-once: flushes and commits the
	// offsets). An error means the outcome is unknown.
	End(ctx context.Context, commit bool) (committed bool, err error)
	// Committed returns the group's committed offset of a partition as the
	// client knows it, or -1.
	Committed(topic string, partition int32) int64
	// StableOffsets asks group's coordinator for its committed offsets,
	// waiting out (failing on) offset commits of open transactions.
	StableOffsets(ctx context.Context, group string) (kadm.OffsetResponses, error)
}

type txnClient struct{ *kgo.GroupTransactSession }

func (c txnClient) StableOffsets(ctx context.Context, group string) (kadm.OffsetResponses, error) {
	return stableOffsets(ctx, c.Client(), group)
}

// stableOffsets asks group's coordinator for its committed offsets with
// RequireStable: an offset commit still pending in a transaction is
// reported as UNSTABLE_OFFSET_COMMIT, never taken for the older offset.
func stableOffsets(ctx context.Context, cl *kgo.Client, group string) (kadm.OffsetResponses, error) {
	return kadm.NewClient(cl).FetchOffsets(kadm.RequireStable(ctx), group)
}

func (c txnClient) Flush(ctx context.Context) error { return c.Client().Flush(ctx) }

func (c txnClient) Committed(topic string, partition int32) int64 {
	return committedOf(c.Client(), topic, partition)
}

func committedOf(cl *kgo.Client, topic string, partition int32) int64 {
	if o, ok := cl.CommittedOffsets()[topic][partition]; ok {
		return o.Offset
	}
	return -1
}

func (c txnClient) End(ctx context.Context, commit bool) (bool, error) {
	return c.GroupTransactSession.End(ctx, kgo.TransactionEndTry(commit))
}

// alosClient is the at-least-once client: produce, flush, then commit the
// offsets. A crash between the flush and the commit re-emits at most the
// records of one commit interval.
type alosClient struct{ cl *kgo.Client }

func (c *alosClient) PollRecords(ctx context.Context, n int) kgo.Fetches {
	return c.cl.PollRecords(ctx, n)
}
func (c *alosClient) Begin() error { return nil }
func (c *alosClient) StableOffsets(ctx context.Context, group string) (kadm.OffsetResponses, error) {
	return stableOffsets(ctx, c.cl, group)
}
func (c *alosClient) Flush(ctx context.Context) error { return c.cl.Flush(ctx) }
func (c *alosClient) Committed(topic string, partition int32) int64 {
	return committedOf(c.cl, topic, partition)
}
func (c *alosClient) Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	c.cl.Produce(ctx, r, promise)
}
func (c *alosClient) End(ctx context.Context, commit bool) (bool, error) {
	if err := c.cl.Flush(ctx); err != nil {
		return false, err
	}
	if !commit {
		// Something failed to produce: consume again from the committed
		// offsets. Rebuilding the client rewinds it.
		return false, errors.New("a record could not be produced; rewinding to the committed offsets")
	}
	if err := c.cl.CommitUncommittedOffsets(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// loop is the poll → decide → produce → commit cycle of one client.
func (p *Processor) loop(ctx context.Context, c client) error {
	p.cl = c
	defer func() { p.cl = nil }()
	for {
		p.applyRebalances()
		if ctx.Err() != nil {
			if p.inTxn {
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
		pollCtx, cancel := ctx, context.CancelFunc(func() {})
		if p.inTxn {
			pollCtx, cancel = context.WithDeadline(ctx, p.txnStart.Add(p.opts.CommitInterval))
		}
		fetches := c.PollRecords(pollCtx, p.opts.MaxPollRecords)
		cancel()
		if fetches.IsClientClosed() {
			return errors.New("client closed")
		}
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
			// franz-go drops a partition whose committed offset could not
			// be fetched (a non-retryable OffsetFetch error) from the
			// assignment and reports it once, as here: nothing would
			// consume it until the next rebalance. Rejoining fetches the
			// offsets again. What the open transaction decided aborts.
			return fmt.Errorf("%w: %w", errPartitionStalled, stalled)
		}
		p.applyRebalances()
		if recs := fetches.Records(); len(recs) > 0 {
			if err := p.process(ctx, c, recs); err != nil {
				return err
			}
		} else if !p.inTxn {
			p.ready.Store(true)
		}
		if p.inTxn && time.Since(p.txnStart) >= p.opts.CommitInterval {
			if err := p.end(ctx, c); err != nil {
				return err
			}
		}
	}
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
			return err
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
	if len(behind) > 0 {
		if p.inTxn && p.opts.Guarantee == config.ExactlyOnce {
			// Committing now would commit the offsets of this poll's
			// records, decided or not: abort, which rewinds to the
			// committed offsets, then restore to those.
			p.rewind = true
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
	if !p.inTxn {
		if err := c.Begin(); err != nil {
			return fmt.Errorf("beginning a transaction: %w", err)
		}
		p.inTxn = true
		p.txnStart = time.Now()
		p.txnRecs = 0
	}
	for _, r := range recs {
		if fw := p.forwards[r.Topic]; fw != nil {
			p.forward(ctx, c, fw, r)
			continue
		}
		st := p.parts[tp{r.Topic, r.Partition}]
		if st == nil || st.check {
			// Revoked meanwhile (the transaction aborts), or not verified
			// against the committed offset (not assigned: a revocation
			// is pending).
			continue
		}
		if err := p.decide(ctx, c, st, r); err != nil {
			p.fail(err)
		}
	}
	return nil
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
	st := &partState{s: s, tp: key, part: part, check: true}
	p.parts[key] = st
	p.obs.Keys(key.topic, key.partition, part.Stamp().Keys)
	return st, nil
}

// forward writes input record r of a repartitioning stream to its
// repartition topic, to the partition of its scoped key's hash (a record
// without a valid key keeps its partition number: it is audited wherever
// it goes), in the open transaction.
func (p *Processor) forward(ctx context.Context, c client, s *streamRun, r *kgo.Record) {
	part := r.Partition % s.repParts
	if h, ok := s.eng.Route(p.record(r)); ok {
		part = int32(binary.BigEndian.Uint64(h[:8]) % uint64(s.repParts))
	}
	p.txnRecs++
	at := coord{tp: tp{r.Topic, r.Partition}, offset: r.Offset}
	p.fwdNext[at.tp] = r.Offset + 1
	out := producer.Forward(r, s.Repartition, part)
	now := time.Now()
	if err := p.refusal(at, out, now); err != nil {
		// The repartition topic refuses it: undecided, it is audited as
		// refused by that topic rather than lost or retried forever.
		out = p.repaired(at, producer.Refused(r, p.opts.AuditTopic, s.auditParts, s.Rules.Name(), s.Repartition, &dedup.Decision{}, err), now)
	}
	p.produce(ctx, c, at, out)
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

// decide decides one record and produces its output or audit record.
func (p *Processor) decide(ctx context.Context, c client, st *partState, rr *kgo.Record) error {
	// rr is the record consumed (its offset is the partition's); r the
	// input record it stands for, whose coordinates, key and headers the
	// decision and its output or audit record carry.
	r := p.unwrapped(st, rr)
	if st.batch == nil {
		st.batch = st.part.NewBatch()
		st.clNext.Store(0)
	}
	d, err := st.s.eng.Decide(st.batch, p.record(r))
	if err != nil {
		return err
	}
	st.next = rr.Offset + 1
	p.txnRecs++
	p.obs.Decided(st.s.Rules.Name(), d.Reason)
	at := coord{tp: st.tp, offset: rr.Offset}
	var out *kgo.Record
	now := time.Now()
	if d.Reason == dedup.FirstSeen {
		out = producer.Output(r, st.s.Output, st.s.outParts, st.s.inParts)
		if err := p.refusal(at, out, now); err != nil {
			// The output refused it before, or would: audit it instead.
			out = producer.Refused(r, p.opts.AuditTopic, st.s.auditParts, st.s.Rules.Name(), st.s.Output, &d, err)
		}
	} else {
		out = producer.Audit(r, p.opts.AuditTopic, st.s.auditParts, st.s.Rules.Name(), &d)
	}
	out = p.repaired(at, out, now)
	if d.Stored {
		k, v := state.EntryChange(st.tp.topic, st.tp.partition, d.Hash, &d.Entry)
		p.changelog(ctx, c, st, k, v)
	}
	p.produce(ctx, c, at, out)
	return nil
}

// produce produces out, the output, audit or repartition record of the
// input record at at, in the open transaction. A refusal of out for what
// it is is remembered, so that the retry after the abort routes it to the
// audit (or repairs its audit record) instead of looping.
func (p *Processor) produce(ctx context.Context, c client, at coord, out *kgo.Record) {
	isAudit := out.Topic == p.opts.AuditTopic
	// Not ctx: a shutdown must finish the open transaction (End commits
	// it), not fail its records half way, which would leave an abort the
	// broker may never see.
	c.Produce(context.WithoutCancel(ctx), out, func(_ *kgo.Record, err error) {
		if err == nil {
			return
		}
		if producer.Refusal(err) && p.opts.Limits[out.Topic].Culprit(out, err, time.Now()) {
			p.failMu.Lock()
			p.refusals[coord{tp: at.tp, offset: at.offset, audit: isAudit}] = err
			p.failMu.Unlock()
			err = fmt.Errorf("%s refused the record of %s/%d/%d: %w", out.Topic, at.topic, at.partition, at.offset, err)
		}
		p.fail(err)
	})
}

// changelog produces a changelog record of st's state in the open
// transaction.
//
// Under at_least_once nothing is written: without transactions the
// changelog could hold changes of records whose offsets never committed
// (a crash between the two), which a restore cannot tell from committed
// ones; partitions there are restored by replaying the input.
func (p *Processor) changelog(ctx context.Context, c client, st *partState, key, value []byte) {
	if p.opts.Guarantee != config.ExactlyOnce {
		return
	}
	r := producer.Changelog(p.opts.ChangelogTopic, p.clParts, st.tp.partition, key, value)
	c.Produce(context.WithoutCancel(ctx), r, func(r *kgo.Record, err error) {
		if err != nil {
			p.fail(fmt.Errorf("writing the changelog of %s/%d: %w", st.tp.topic, st.tp.partition, err))
			return
		}
		for {
			cur := st.clNext.Load()
			if r.Offset+1 <= cur || st.clNext.CompareAndSwap(cur, r.Offset+1) {
				return
			}
		}
	})
}

// finishChanges ends each partition's changes of the open transaction in
// the changelog: tombstones of the keys retired as of the batch's
// watermark (deleted in the batch too), then the marker saying which
// input offset and watermark the partition's state reflects once the
// transaction commits.
func (p *Processor) finishChanges(ctx context.Context, c client) error {
	for _, st := range p.parts {
		if st.batch == nil {
			continue
		}
		_, _, err := st.batch.Retire(p.opts.RetireLimit, func(h dedup.Hash) {
			p.changelog(ctx, c, st, state.Tombstone(st.tp.topic, st.tp.partition, h), nil)
		})
		if err != nil {
			return fmt.Errorf("retiring expired keys of %s/%d: %w", st.tp.topic, st.tp.partition, err)
		}
		k, v := state.MarkerChange(st.tp.topic, st.tp.partition, st.next, st.batch.EventTime())
		p.changelog(ctx, c, st, k, v)
	}
	return nil
}

// refusal returns why out, the record produced for the input at at, will
// be refused: a refusal met before (remembered by produce) or one its
// topic's limits predict; nil if none.
func (p *Processor) refusal(at coord, out *kgo.Record, now time.Time) error {
	at.audit = out.Topic == p.opts.AuditTopic
	if err := p.refused(at); err != nil {
		return err
	}
	return p.opts.Limits[out.Topic].Refuses(out, now)
}

// repaired returns out, or, for an audit record its topic refused before
// or would refuse, what the audit topic can take (producer.Repaired).
func (p *Processor) repaired(at coord, out *kgo.Record, now time.Time) *kgo.Record {
	if out.Topic != p.opts.AuditTopic {
		return out
	}
	if err := p.refusal(at, out, now); err != nil {
		return producer.Repaired(out, err, now)
	}
	return out
}

// refused returns the error a topic refused c's record with, or nil.
func (p *Processor) refused(c coord) error {
	p.failMu.Lock()
	defer p.failMu.Unlock()
	return p.refusals[c]
}

// forgetRefusals drops the refusals of the records of key below next, its
// committed offset: those records are decided (or forwarded) for good.
func (p *Processor) forgetRefusals(key tp, next int64) {
	p.failMu.Lock()
	defer p.failMu.Unlock()
	for c := range p.refusals {
		if c.tp == key && c.offset < next {
			delete(p.refusals, c)
		}
	}
}

// fail marks the open transaction as failed: it will abort.
func (p *Processor) fail(err error) {
	p.failMu.Lock()
	if p.failErr == nil {
		p.failErr = err
	}
	p.failMu.Unlock()
	p.failed.Store(true)
}

// record converts a franz-go record for the engine, reusing a header
// buffer.
func (p *Processor) record(r *kgo.Record) *dedup.Record {
	p.hdrs = p.hdrs[:0]
	for _, h := range r.Headers {
		p.hdrs = append(p.hdrs, dedup.Header(h))
	}
	return &dedup.Record{
		Topic:     r.Topic,
		Partition: r.Partition,
		Offset:    r.Offset,
		Timestamp: r.Timestamp.UnixMilli(),
		Value:     r.Value,
		Headers:   p.hdrs,
	}
}

// end ends the open transaction. Committed: every partition's batch goes
// to Pebble with its new stamp. Aborted: the batches are dropped and every
// partition is checked again (the client rewound to the committed
// offsets). An error means the outcome is unknown: the caller rebuilds the
// session, which checks every partition's stamp against the committed
// offsets, so nothing is guessed.
func (p *Processor) end(ctx context.Context, c client) error {
	commit := !p.failed.Load() && !p.rewind
	rewind := p.rewind
	p.rewind = false
	if commit {
		if err := p.finishChanges(ctx, c); err != nil {
			p.fail(err)
			commit = false
		}
	}
	if commit {
		// Records still in flight may yet fail (a refusal, a changelog
		// write): End commits whatever the outcome of a produce, so wait
		// for every outcome first and decide on them all.
		if err := c.Flush(ctx); err != nil {
			// The session is rebuilt: whatever this transaction met is
			// gone with it, and must not abort the next session's first
			// transaction.
			p.resetTxn()
			return fmt.Errorf("flushing the transaction's records: %w", err)
		}
		commit = !p.failed.Load()
	}
	start := time.Now()
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
	took := time.Since(start)
	p.failMu.Lock()
	failErr := p.failErr
	p.failMu.Unlock()
	fwdNext := p.fwdNext
	p.resetTxn()
	p.obs.Transaction(committed, took, p.txnRecs)
	if failErr != nil {
		p.log.Warn().Err(failErr).Msg("transaction aborted: a record could not be produced")
	}
	if err != nil {
		return fmt.Errorf("ending transaction (outcome unknown): %w", err)
	}
	for _, st := range p.parts {
		if st.batch == nil {
			continue
		}
		if !committed {
			st.batch.Discard()
			st.batch = nil
			st.check = true
			continue
		}
		p.forgetRefusals(st.tp, st.next)
		cl := st.clNext.Load()
		if cl == 0 {
			cl = st.part.Stamp().Changelog
		}
		if err := st.batch.Commit(st.next, cl); err != nil {
			// The state lags the broker now: the next record replays
			// the gap.
			p.log.Error().Err(err).Str("topic", st.tp.topic).Int32("partition", st.tp.partition).Msg("writing state after commit")
			st.check = true
		}
		st.batch = nil
		p.obs.Keys(st.tp.topic, st.tp.partition, st.part.Stamp().Keys)
	}
	if committed {
		for key, next := range fwdNext {
			p.forgetRefusals(key, next)
		}
	}
	if !committed {
		for _, st := range p.parts {
			st.check = true
		}
		why := "transaction aborted; consuming again from the committed offsets"
		if rewind {
			why = "transaction aborted to restore a newly assigned partition first; consuming again from the committed offsets"
		}
		p.log.Info().Dur("took", took).Msg(why)
	}
	return nil
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
	for key := range p.fwdNext {
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

// resetTxn forgets what the open transaction met: its failure and the
// forwarded offsets. The transaction is over, or its session is.
func (p *Processor) resetTxn() {
	p.inTxn = false
	p.failMu.Lock()
	p.failErr = nil
	p.failMu.Unlock()
	p.failed.Store(false)
	p.fwdNext = map[tp]int64{}
}

// kgoLogger sends franz-go's log lines to zerolog at debug level, warnings
// and errors at their own.
type kgoLogger struct{ l zerolog.Logger }

func (k kgoLogger) Level() kgo.LogLevel {
	switch k.l.GetLevel() {
	case zerolog.DebugLevel, zerolog.TraceLevel:
		return kgo.LogLevelDebug
	case zerolog.InfoLevel:
		return kgo.LogLevelWarn
	default:
		return kgo.LogLevelError
	}
}

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	var ev *zerolog.Event
	switch level {
	case kgo.LogLevelError:
		ev = k.l.Error()
	case kgo.LogLevelWarn:
		ev = k.l.Warn()
	case kgo.LogLevelInfo:
		ev = k.l.Info()
	default:
		ev = k.l.Debug()
	}
	ev.Str("component", "kgo").Fields(keyvals).Msg(msg)
}
