package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kzerolog"

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
// the processing goroutine and must not block; Decided may be called from
// several goroutines at once (partitions are decided in parallel).
type Observer interface {
	// Decided counts n decisions r of stream.
	Decided(stream string, r dedup.Reason, n int)
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
	// DiskFull reports that the state's file system went below
	// Options.MinFreeSpace (true: deciding stopped) or has room again.
	DiskFull(full bool)
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

type nopObserver struct{}

func (nopObserver) Decided(string, dedup.Reason, int)    {}
func (nopObserver) Transaction(bool, time.Duration, int) {}
func (nopObserver) Restored(string, int32, int64, int64) {}
func (nopObserver) Keys(string, int32, int64)            {}
func (nopObserver) Rebuilt(string)                       {}
func (nopObserver) DiskFull(bool)                        {}

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
	// NoChangelog writes no changelog records under exactly_once either
	// (config's changelog: false): partitions are then restored by
	// replaying their input, as under at_least_once. Default: false, the
	// changelog is written.
	NoChangelog bool
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
	// RestoreBuffer is how many bytes of changelog changes a restore
	// collects before writing them to the state in one sstable
	// (state.Loader); a restore holds up to two such buffers, one being
	// written while the other fills. Bigger buffers write fewer, larger
	// sstables. Default: 64 MiB (state.DefaultLoadBuffer), about 1.3
	// million changes each.
	RestoreBuffer int
	// FetchMaxBytes bounds one fetch of the processing client
	// (kgo.FetchMaxBytes) and each partition's part of it
	// (kgo.FetchMaxPartitionBytes, at most 1 MiB): the bytes are the
	// wire's, compressed, and small compressible records took thirty
	// times as much once decoded (cmd/kdedup's memoryPlan sizes it).
	// Default: 0, franz-go's (50 MiB, 1 MiB a partition).
	FetchMaxBytes int32
	// MinFreeSpace is the free space floor of the state's file system
	// (config state.min_free_space): below it the loop stops deciding
	// records (disk.go) until the file system has room again. 0: no
	// floor. Default: 0 here; kdedup run passes the configuration's.
	MinFreeSpace int64
	// FreeSpace returns the bytes available on the state's file system.
	// Default (nil): Store.Space's Avail. Tests replace it.
	FreeSpace func() (uint64, error)
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

	events  sync.Mutex // guards pending
	pending []rebalanceEvent
	ready   atomic.Bool
	// joined is set when the group hands this session an assignment
	// (franz-go calls OnPartitionsAssigned after every join, even with
	// nothing new), cleared when the session starts and when its
	// partitions are lost: until the group answered, an empty poll says
	// nothing about readiness.
	joined atomic.Bool
	// diskFull is set while the state's file system is below
	// MinFreeSpace: nothing is decided (disk.go).
	diskFull atomic.Bool
	// spaceErr is the last error reading the free space, logged once.
	spaceErr string
	restores atomic.Int32

	// w produces the transactions' records and knows whether the open
	// one failed.
	w *producer.Writer
	// txn is the open transaction.
	txn  transaction
	hdrs []dedup.Header // scratch of record, for forward

	// keyReqs are the key admin requests waiting for the loop (keys.go);
	// keyRetry the forgets whose transaction did not commit, tried again
	// by the loop's next serveKeys.
	keyReqs  chan *keyRequest
	keyRetry []*keyRequest
	// wakePoll, guarded by wakeMu, ends the loop's idle poll (wake).
	wakeMu   sync.Mutex
	wakePoll context.CancelFunc
}

type tp struct {
	topic     string
	partition int32
}

type streamRun struct {
	Stream
	eng *dedup.Engine
	out producer.Stream // what the Writer needs of it
}

// partState is one assigned partition: its keyspace, the open
// transaction's batch, and whether its stamp must be checked against the
// committed offset before its next record is decided.
type partState struct {
	s     *streamRun
	eng   *dedup.Engine  // the partition's own: partitions are decided in parallel
	hdrs  []dedup.Header // scratch of record
	tp    tp
	part  *state.Partition
	batch *state.Batch
	next  int64 // offset after the batch's last record
	check bool
	// clNext is the offset after the last changelog record the open
	// transaction wrote for the partition (0: none yet); produce promises
	// raise it.
	clNext atomic.Int64
	// clock is the open transaction's timestamp of the partition's
	// changelog records, from seek, which also gives its markers'
	// HeaderSeek (seek.go). A partState lives while its partition stays
	// assigned: a new owner starts anew.
	clock int64
	seek  seekPoints
}

// EnsureDefaults fills in the defaults of unset fields.
func (o *Options) EnsureDefaults() {
	if o.SessionTimeout == 0 {
		o.SessionTimeout = 45 * time.Second
	}
	if o.TransactionTimeout == 0 {
		o.TransactionTimeout = 30 * time.Second
	}
	if o.MaxPollRecords == 0 {
		o.MaxPollRecords = 10_000
	}
	if o.RetireLimit == 0 {
		o.RetireLimit = 1_000
	}
	if o.RestoreBuffer == 0 {
		o.RestoreBuffer = state.DefaultLoadBuffer
	}
	if o.RestoreStallTimeout == 0 {
		o.RestoreStallTimeout = 2 * time.Minute
	}
}

// Validate reports every problem of the options at once (after
// EnsureDefaults), each wrapping ErrOptions.
func (o *Options) Validate() error {
	var errs []error
	if len(o.Brokers) == 0 {
		errs = append(errs, errors.New("no brokers"))
	}
	if o.Group == "" || o.InstanceID == "" {
		errs = append(errs, errors.New("group and instance id are required"))
	}
	if o.Guarantee != config.ExactlyOnce && o.Guarantee != config.AtLeastOnce {
		errs = append(errs, fmt.Errorf("guarantee %q", o.Guarantee))
	}
	if o.CommitInterval <= 0 {
		errs = append(errs, errors.New("commit interval must be positive"))
	}
	if o.TransactionTimeout >= o.SessionTimeout {
		errs = append(errs, fmt.Errorf("transaction timeout %v must be below the session timeout %v", o.TransactionTimeout, o.SessionTimeout))
	}
	if o.RestoreBuffer < state.MinLoadBuffer {
		errs = append(errs, fmt.Errorf("restore buffer %d bytes is below the minimum of %d", o.RestoreBuffer, state.MinLoadBuffer))
	}
	if o.RestoreStallTimeout <= o.TransactionTimeout {
		errs = append(errs, fmt.Errorf("restore stall timeout %v must be above the transaction timeout %v, so that a crashed instance's transaction is aborted before a restore waiting on it gives up", o.RestoreStallTimeout, o.TransactionTimeout))
	}
	if o.Store == nil || len(o.Streams) == 0 || o.AuditTopic == "" || o.ChangelogTopic == "" {
		errs = append(errs, errors.New("store, streams, audit and changelog topics are required"))
	}
	if o.ChangelogTopic != "" && o.Partitions[o.ChangelogTopic] == 0 {
		errs = append(errs, fmt.Errorf("partition count of the changelog %s unknown", o.ChangelogTopic))
	}
	auditParts := o.Partitions[o.AuditTopic]
	for _, s := range o.Streams {
		if o.Partitions[s.Input] == 0 || o.Partitions[s.Output] == 0 || auditParts == 0 {
			errs = append(errs, fmt.Errorf("stream %s: partition counts of %s, %s and %s unknown", s.Rules.Name(), s.Input, s.Output, o.AuditTopic))
		}
		if s.Repartition != "" && o.Partitions[s.Repartition] == 0 {
			errs = append(errs, fmt.Errorf("stream %s: partition count of %s unknown", s.Rules.Name(), s.Repartition))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrOptions, errors.Join(errs...))
	}
	return nil
}

// New checks the options (EnsureDefaults, then Validate) and returns a
// Processor.
func New(opts Options) (*Processor, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
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
		txnID:        opts.Group + "-" + opts.InstanceID,
		keyReqs:      make(chan *keyRequest, maxKeyRequests),
		clParts:      opts.Partitions[opts.ChangelogTopic],
	}
	if p.obs == nil {
		p.obs = nopObserver{}
	}
	for _, s := range opts.Streams {
		sr := &streamRun{
			Stream: s,
			eng:    dedup.NewEngine(s.Rules),
			out: producer.Stream{
				Name:                  s.Rules.Name(),
				Output:                s.Output,
				OutputPartitions:      opts.Partitions[s.Output],
				InputPartitions:       opts.Partitions[s.Input],
				Repartition:           s.Repartition,
				RepartitionPartitions: opts.Partitions[s.Repartition],
			},
		}
		if s.Repartition != "" {
			p.streams[s.Repartition] = sr
			p.forwards[s.Input] = sr
			continue
		}
		p.streams[s.Input] = sr
	}
	wo := producer.WriterOptions{AuditTopic: opts.AuditTopic, AuditPartitions: opts.Partitions[opts.AuditTopic], Limits: opts.Limits}
	if p.changelogs() {
		wo.ChangelogTopic, wo.ChangelogPartitions = opts.ChangelogTopic, p.clParts
	}
	p.w = producer.NewWriter(wo)
	p.txn.reset()
	return p, nil
}

// changelogs reports whether transactions write the changelog: under
// exactly_once unless turned off. Without transactions the changelog
// could hold changes of records whose offsets never committed (a crash
// between the two), which a restore cannot tell from committed ones;
// partitions there are restored by replaying the input.
func (p *Processor) changelogs() bool {
	return p.opts.Guarantee == config.ExactlyOnce && !p.opts.NoChangelog
}

// Ready reports whether the processor is consuming with every assigned
// partition's state restored.
func (p *Processor) Ready() bool {
	return p.ready.Load() && p.joined.Load() && !p.diskFull.Load() && p.restores.Load() == 0
}

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
		kgo.WithLogger(newKgoLogger(p.log)),
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
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			p.joined.Store(false)
			p.rebalanced(false, m)
		}),
	)
	if n := p.opts.FetchMaxBytes; n > 0 {
		opts = append(opts, kgo.FetchMaxBytes(n), kgo.FetchMaxPartitionBytes(min(n, 1<<20)))
	}
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

// Run processes until ctx ends, then finishes or aborts the open
// transaction, leaves the group and returns nil. Failures of the brokers
// or the client never end Run: the session is rebuilt and processing
// resumes from the committed offsets.
//
// Damage to the state store ends Run (it would fail every transaction
// again, forever): once the store reports corruption (state.Store's
// Corrupted), or a session ends on an error that says so, the session
// stops as on shutdown (the open transaction aborts if a read failed in
// it, and the group is left, so that the partitions can move) and Run
// returns an error wrapping state.ErrStoreCorrupt. The caller rebuilds the
// store (state.Store.Rebuild) and runs a new Processor, which restores
// every partition from the changelog.
func (p *Processor) Run(ctx context.Context) error {
	sctx, stop := p.untilCorrupt(ctx)
	defer stop()
	backoff := 100 * time.Millisecond
	for {
		err := p.session(sctx)
		p.ready.Store(false)
		cerr := p.corrupted(ctx, err)
		if sctx.Err() != nil || cerr != nil {
			p.failKeys()
			p.closePartitions()
			return cerr
		}
		reason := rebuildReason(err)
		p.obs.Rebuilt(reason)
		p.log.Warn().Err(err).Str("reason", reason).Dur("retry_in", backoff).Msg("rebuilding the client session")
		select {
		case <-sctx.Done():
			p.failKeys()
			p.closePartitions()
			return p.corrupted(ctx, nil)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// untilCorrupt returns ctx, also ended once the store reports corruption.
func (p *Processor) untilCorrupt(ctx context.Context) (context.Context, context.CancelFunc) {
	sctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-p.opts.Store.Corrupted():
			p.log.Error().Err(p.opts.Store.Corruption()).Msg("state store corrupt: stopping, to rebuild it from the changelog")
			cancel()
		case <-sctx.Done():
		}
	}()
	return sctx, cancel
}

// corrupted returns the error Run ends with when the store is damaged (a
// corruption it reported, or err's), wrapping state.ErrStoreCorrupt; nil
// if it is not, or on shutdown (ctx ended).
func (p *Processor) corrupted(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	cause := p.opts.Store.Corruption()
	if cause == nil && state.IsCorrupt(err) {
		cause = err
	}
	if cause == nil {
		return nil
	}
	if !errors.Is(cause, state.ErrStoreCorrupt) {
		cause = fmt.Errorf("%w: %w", state.ErrStoreCorrupt, cause)
	}
	return fmt.Errorf("consumer: processing stopped: %w", cause)
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
	p.joined.Store(false)
	// The new client fetches everything: if the disk is still full, the
	// first check pauses it again.
	if p.diskFull.Swap(false) {
		p.obs.DiskFull(false)
	}
	p.events.Lock()
	p.pending = nil
	p.events.Unlock()
	clear(p.assigned)
	// Forgets of a transaction the last session left open never
	// committed: try them again.
	p.forgetsEnded(p.txn.forgets, false)
	p.resetTxn()
	if p.opts.Guarantee == config.ExactlyOnce {
		sess, serr := kgo.NewGroupTransactSession(p.groupOpts()...)
		if serr != nil {
			return fmt.Errorf("creating transactional session %s: %w", p.txnID, serr)
		}
		defer func() { p.leave(sess.Close, p.giveBack(ctx, err), ctx.Err() != nil) }()
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
	defer func() { p.leave(cl.Close, p.giveBack(ctx, err), ctx.Err() != nil) }()
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
//
// On shutdown the close is waited for closeWait at most: a client whose
// group join cannot complete (a rebalance waiting for a member that is
// frozen) waits for that join in its close, which would hold the stop
// until kdedup's shutdown limit and skip the LeaveGroup, leaving the
// partitions to wait out the session timeout (found by the soak,
// TestSoakStopDuringJoin). The member is then removed while its client
// still closes, which the process's exit ends. Between sessions the
// close is always waited for: a new session must not meet the old
// client in the group.
func (p *Processor) leave(closeFn func(), leaveGroup, shutdown bool) {
	if !shutdown {
		closeFn()
	} else {
		closed := make(chan struct{})
		go func() { closeFn(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(closeWait):
			p.log.Warn().Dur("waited", closeWait).Msg("closing the client takes long (a group join that cannot complete?): leaving the group without waiting for it")
		}
	}
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

// newKgoLogger sends franz-go's log lines to log, with "component":"kgo",
// through franz-go's own adapter kzerolog; kgoLogger only chooses the
// level franz-go logs from.
func newKgoLogger(log zerolog.Logger) kgoLogger {
	log = log.With().Str("component", "kgo").Logger()
	return kgoLogger{kzerolog.New(&log), &log}
}

// closeWait bounds how long a shutdown waits for the client's close
// before leaving the group without it (Processor.leave).
const closeWait = 5 * time.Second

// kgoLogger is kzerolog's logger with its Level replaced, which kzerolog
// has no option for: kzerolog maps zerolog's info to franz-go's info, and
// franz-go's info is chatty (each connection, metadata change and group
// step), so at zerolog's info franz-go logs from warn, and at zerolog's
// warn and above only its errors. kzerolog's Log writes each line at its
// own level.
type kgoLogger struct {
	*kzerolog.Logger
	log *zerolog.Logger
}

func (k kgoLogger) Level() kgo.LogLevel {
	switch k.log.GetLevel() {
	case zerolog.DebugLevel, zerolog.TraceLevel:
		return kgo.LogLevelDebug
	case zerolog.InfoLevel:
		return kgo.LogLevelWarn
	default:
		return kgo.LogLevelError
	}
}
