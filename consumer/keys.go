package consumer

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kdedup/kdedup/dedup"
	"github.com/kdedup/kdedup/state"
)

// The key admin requests (LookupKey, ForgetKey) are answered by the
// processing loop itself, between transactions: it alone owns the
// partitions' state, so a request never races a decision, and a forget
// is a state change like any other, written in a transaction with its
// changelog tombstone and its audit record.
//
// A request is queued on keyReqs and wakes the loop's idle poll (wake);
// the loop answers it at the top of its next iteration when no
// transaction is open (serveKeys), which is within one commit interval
// while records flow. A lookup is answered at once, from the committed
// state. A forget opens a transaction (the records polled next join it)
// and is answered once that transaction committed; one that aborts is
// tried again in the next.

// KeyQuery names one key of one stream: the key as its source gives it
// and the values of the stream's scope parts, in the order the stream's
// configuration lists them (missing values count as "").
type KeyQuery struct {
	Stream string
	Key    string
	Scope  []string
}

// KeyEntry is a key's live entry in one partition's state.
type KeyEntry struct {
	// Topic and Partition name the partition whose state holds it: the
	// stream's input (or repartition topic) partition.
	Topic     string
	Partition int32
	dedup.Entry
}

// KeyState is what an instance knows of a key.
type KeyState struct {
	// Entries are the key's live entries in the partitions this instance
	// owns, the earliest first-seen first. A key lives in one partition
	// when the input is partitioned by it (or the stream repartitions);
	// otherwise each partition keeps its own window, and a key sent to
	// several has an entry in each.
	Entries []KeyEntry
	// ETag is the strong entity tag of Entries, quoted ("..."): it
	// changes whenever any of them does (a new first-seen, a refresh, a
	// forget). Empty when Entries is.
	ETag string
	// Owned are the partitions of the stream this instance owns, as
	// topic/partition.
	Owned []string
}

// Match is an If-Match precondition: Any for "*", else the entity tags
// (quoted) of which one must be the key's current ETag.
type Match struct {
	Any   bool
	ETags []string
}

func (m Match) matches(etag string) bool {
	return m.Any || slices.Contains(m.ETags, etag)
}

// Errors of the key admin requests.
var (
	// ErrUnknownStream: no stream has the query's name.
	ErrUnknownStream = errors.New("consumer: no stream of that name")
	// ErrNotLive: the key has no live entry in a partition this instance
	// owns (KeyState.Owned says which).
	ErrNotLive = errors.New("consumer: key not live in any partition this instance owns")
	// ErrPrecondition: a forget's Match does not name the key's current
	// entity tag (KeyState.ETag).
	ErrPrecondition = errors.New("consumer: the key's entry is not the one the precondition names")
	// ErrUnavailable: the request could not be answered now (the
	// processor is between sessions, restoring a partition of the
	// stream, or stopping); it may be retried.
	ErrUnavailable = errors.New("consumer: keys cannot be served right now")
)

// keyRequest is a queued LookupKey or ForgetKey.
type keyRequest struct {
	ctx    context.Context
	q      KeyQuery
	s      *streamRun
	h      dedup.Hash
	forget bool
	match  Match
	// tried: a transaction carrying this forget ended without the loop
	// knowing it committed (aborted, or its outcome unknown). Finding the
	// key no longer live then means the forget, or an expiry, removed it:
	// either way it is forgotten.
	tried bool
	// forgotten is the state the forget removed, answered once its
	// transaction commits.
	forgotten KeyState
	done      chan keyAnswer // buffered: the loop never waits on a caller
}

type keyAnswer struct {
	st  KeyState
	err error
}

func (r *keyRequest) answer(st KeyState, err error) { r.done <- keyAnswer{st, err} }

// maxKeyRequests bounds the requests queued for the loop; more are
// answered ErrUnavailable at once.
const maxKeyRequests = 256

// LookupKey returns the live entries of q's key in the partitions this
// instance owns, read from committed state; ErrNotLive (with the owned
// partitions) when there are none. It waits for the processing loop,
// at most until ctx ends (ErrUnavailable). Safe for concurrent use.
func (p *Processor) LookupKey(ctx context.Context, q KeyQuery) (KeyState, error) {
	return p.submit(ctx, q, false, Match{})
}

// ForgetKey removes q's key from the state of every partition this
// instance owns that holds it live, if m matches its current ETag: in one
// transaction with a changelog tombstone for each entry (so that the
// forget survives restarts, handovers and restores) and an audit record
// with reason forgotten. It returns once that transaction committed: the
// next record with the key is first_seen. ErrNotLive when the key is not
// live, ErrPrecondition (with the current state) when m does not match.
// If ctx ends first the answer is ErrUnavailable, and the forget may yet
// commit. Safe for concurrent use.
func (p *Processor) ForgetKey(ctx context.Context, q KeyQuery, m Match) (KeyState, error) {
	return p.submit(ctx, q, true, m)
}

func (p *Processor) submit(ctx context.Context, q KeyQuery, forget bool, m Match) (KeyState, error) {
	s := p.streamNamed(q.Stream)
	if s == nil {
		return KeyState{}, fmt.Errorf("%w: %q", ErrUnknownStream, q.Stream)
	}
	h, err := s.Rules.KeyHash([]byte(q.Key), q.Scope)
	if err != nil {
		return KeyState{}, err
	}
	r := &keyRequest{ctx: ctx, q: q, s: s, h: h, forget: forget, match: m, done: make(chan keyAnswer, 1)}
	select {
	case p.keyReqs <- r:
	default:
		return KeyState{}, fmt.Errorf("%w: %d requests already waiting", ErrUnavailable, maxKeyRequests)
	}
	p.wake()
	select {
	case a := <-r.done:
		return a.st, a.err
	case <-ctx.Done():
		return KeyState{}, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
}

// streamNamed returns the stream named name, nil if none.
func (p *Processor) streamNamed(name string) *streamRun {
	for _, s := range p.streams {
		if s.Rules.Name() == name {
			return s
		}
	}
	return nil
}

// wake ends the loop's idle poll, so that it serves a queued request now.
func (p *Processor) wake() {
	p.wakeMu.Lock()
	if p.wakePoll != nil {
		p.wakePoll()
	}
	p.wakeMu.Unlock()
}

// setWake sets what wake calls: the cancel of an idle poll, or nil.
func (p *Processor) setWake(cancel context.CancelFunc) {
	p.wakeMu.Lock()
	p.wakePoll = cancel
	p.wakeMu.Unlock()
}

// armWake makes a key request end the idle wait cancel ends (setWake),
// and ends it at once if one is queued already (before setWake, which
// wake could not reach).
func (p *Processor) armWake(cancel context.CancelFunc) {
	p.setWake(cancel)
	if p.keysWaiting() {
		cancel()
	}
}

// keysWaiting reports whether key requests wait for serveKeys.
func (p *Processor) keysWaiting() bool { return len(p.keyReqs) > 0 || len(p.keyRetry) > 0 }

// serveKeys answers the queued key requests. No transaction is open;
// a forget opens one, which the loop then ends as any other.
func (p *Processor) serveKeys(ctx context.Context, c client) error {
	reqs := p.keyRetry
	p.keyRetry = nil
	for more := true; more; {
		select {
		case r := <-p.keyReqs:
			reqs = append(reqs, r)
		default:
			more = false
		}
	}
	if p.diskFull.Load() {
		// A lookup may have to restore a partition, a forget writes:
		// neither while the state's disk is full (disk.go).
		for _, r := range reqs {
			r.answer(KeyState{}, fmt.Errorf("%w: the state's disk is below state.min_free_space", ErrUnavailable))
		}
		return nil
	}
	verified := map[*streamRun][]*partState{}
	var offsets *groupOffsets
	for _, r := range reqs {
		if r.ctx.Err() != nil {
			continue // the caller gave up: nothing to answer, nothing to do
		}
		sts, ok := verified[r.s]
		if !ok {
			var err error
			sts, err = p.verifyStream(ctx, c, r.s, &offsets)
			if err != nil {
				r.answer(KeyState{}, err)
				if errors.Is(err, ErrUnavailable) {
					continue
				}
				return err
			}
			verified[r.s] = sts
		}
		ks := p.keyState(r, sts)
		switch {
		case !r.forget && len(ks.Entries) == 0:
			r.answer(ks, ErrNotLive)
		case !r.forget:
			r.answer(ks, nil)
		case len(ks.Entries) == 0 && r.tried:
			r.answer(r.forgotten, nil)
		case len(ks.Entries) == 0:
			r.answer(ks, ErrNotLive)
		case !r.match.matches(ks.ETag):
			r.answer(ks, ErrPrecondition)
		default:
			if err := p.forget(ctx, c, r, ks, sts); err != nil {
				r.answer(KeyState{}, err)
				return err
			}
		}
	}
	return nil
}

// groupOffsets are the group's committed offsets as its coordinator
// knows them, fetched once per serveKeys when needed.
type groupOffsets struct {
	at map[tp]int64
}

// verifyStream returns the states of the partitions of s this session
// owns, each checked against the group's committed offset (restored to
// it if behind, as before deciding a record of it), so that what a
// request reads is what the next record would be decided against.
func (p *Processor) verifyStream(ctx context.Context, c client, s *streamRun, offsets **groupOffsets) ([]*partState, error) {
	topic := s.Input
	if s.Repartition != "" {
		topic = s.Repartition
	}
	var keys []tp
	for key := range p.assigned {
		if key.topic == topic {
			keys = append(keys, key)
		}
	}
	slices.SortFunc(keys, func(a, b tp) int { return cmp.Compare(a.partition, b.partition) })
	sts := make([]*partState, 0, len(keys))
	for _, key := range keys {
		st, err := p.partition(key)
		if err != nil {
			return nil, err
		}
		if st.check {
			to, known := p.committed(c, key)
			if !known {
				// Nothing polled of it yet: the session learns its
				// committed offset with its first records. Ask the
				// coordinator; none committed means the state must
				// reflect nothing (the group starts at the earliest
				// offset).
				if *offsets == nil {
					o, err := p.fetchGroupOffsets(ctx, c)
					if err != nil {
						return nil, fmt.Errorf("%w: the committed offset of %s/%d: %w", ErrUnavailable, key.topic, key.partition, err)
					}
					*offsets = o
				}
				to = (*offsets).at[key]
			}
			err := p.restore(ctx, st, to)
			if errors.Is(err, errRevoked) {
				return nil, fmt.Errorf("%w: %s/%d was revoked while its state was restored", ErrUnavailable, key.topic, key.partition)
			}
			if err != nil {
				return nil, fmt.Errorf("restoring %s/%d to answer a key request: %w", key.topic, key.partition, err)
			}
			st.check = false
		}
		sts = append(sts, st)
	}
	return sts, nil
}

// fetchGroupOffsets asks the group's coordinator for its committed
// offsets (stable: waiting out pending transactional commits).
func (p *Processor) fetchGroupOffsets(ctx context.Context, c client) (*groupOffsets, error) {
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	offs, err := c.StableOffsets(fctx, p.opts.Group)
	if err != nil {
		return nil, err
	}
	g := &groupOffsets{at: map[tp]int64{}}
	var first error
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Err != nil {
			if first == nil {
				first = fmt.Errorf("%s/%d: %w", o.Topic, o.Partition, o.Err)
			}
			return
		}
		if o.At >= 0 {
			g.at[tp{o.Topic, o.Partition}] = o.At
		}
	})
	return g, first
}

// keyState reads r's key in sts: from the open transaction's batch
// where a forget of this round already changed it, else committed state.
func (p *Processor) keyState(r *keyRequest, sts []*partState) KeyState {
	var ks KeyState
	for _, st := range sts {
		ks.Owned = append(ks.Owned, st.tp.topic+"/"+strconv.Itoa(int(st.tp.partition)))
		var (
			e   dedup.Entry
			ok  bool
			err error
			wm  int64
		)
		if st.batch != nil {
			e, ok, err = st.batch.Get(r.h)
			wm = st.batch.EventTime()
		} else {
			e, ok, err = st.part.Get(r.h)
			wm = st.part.Stamp().EventTime
		}
		if err != nil {
			// A read error is the partition's: it fails the next
			// decision too, which checks the partition again.
			p.log.Error().Err(err).Str("topic", st.tp.topic).Int32("partition", st.tp.partition).Msg("reading a key for the admin API")
			continue
		}
		if ok && r.s.Rules.Live(e, wm) {
			ks.Entries = append(ks.Entries, KeyEntry{Topic: st.tp.topic, Partition: st.tp.partition, Entry: e})
		}
	}
	slices.SortFunc(ks.Entries, func(a, b KeyEntry) int {
		return cmp.Or(cmp.Compare(a.FirstSeen, b.FirstSeen), cmp.Compare(a.Partition, b.Partition))
	})
	ks.ETag = etag(ks.Entries)
	return ks
}

// etag is the strong entity tag of entries: a digest of every field of
// each (where it is stored, where it was first seen, when, until when,
// its payload fingerprint), so that any change of any entry changes it.
func etag(entries []KeyEntry) string {
	if len(entries) == 0 {
		return ""
	}
	var b []byte
	for _, e := range entries {
		b = binary.AppendUvarint(b, uint64(len(e.Topic)))
		b = append(b, e.Topic...)
		b = binary.AppendVarint(b, int64(e.Partition))
		b = binary.AppendUvarint(b, uint64(len(e.Entry.Topic)))
		b = append(b, e.Entry.Topic...)
		b = binary.AppendVarint(b, int64(e.Entry.Partition))
		b = binary.AppendVarint(b, e.Offset)
		b = binary.AppendVarint(b, e.FirstSeen)
		b = binary.AppendVarint(b, e.Expiry)
		b = append(b, e.Fingerprint[:]...)
	}
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}

// forget removes r's key's entries ks from their partitions in the open
// transaction (beginning one), with a changelog tombstone and an audit
// record each; r is answered when the transaction ends (Processor.end).
func (p *Processor) forget(ctx context.Context, c client, r *keyRequest, ks KeyState, sts []*partState) error {
	if err := p.txn.begin(c); err != nil {
		return err
	}
	for _, ke := range ks.Entries {
		var st *partState
		for _, s := range sts {
			if s.tp.topic == ke.Topic && s.tp.partition == ke.Partition {
				st = s
			}
		}
		if st.batch == nil {
			st.batch = st.part.NewBatch()
			st.clNext.Store(0)
			st.clock = st.seek.next(time.Now())
			st.next = st.part.Stamp().Input
		}
		if err := st.batch.Delete(r.h); err != nil {
			p.w.Fail(fmt.Errorf("forgetting key %q of %s in %s/%d: %w", r.q.Key, r.q.Stream, ke.Topic, ke.Partition, err))
			break
		}
		p.changelog(ctx, c, st, state.Tombstone(st.tp.topic, st.tp.partition, r.h), nil, nil)
		e := ke.Entry
		p.w.Forgotten(ctx, c, r.q.Stream, st.tp.partition, []byte(r.q.Key), r.q.Scope, &e)
		p.log.Info().Str("stream", r.q.Stream).Str("topic", ke.Topic).Int32("partition", ke.Partition).
			Str("key", r.q.Key).Strs("scope", r.q.Scope).Msg("forgetting a key (admin API)")
	}
	r.forgotten = ks
	p.txn.forgets = append(p.txn.forgets, r)
	return nil
}

// forgetsEnded answers the forgets of a transaction that ended: they
// took effect if it committed; otherwise they are tried again in the
// next round (keyRetry), as tried.
func (p *Processor) forgetsEnded(forgets []*keyRequest, committed bool) {
	for _, r := range forgets {
		if committed {
			r.answer(r.forgotten, nil)
			continue
		}
		r.tried = true
		p.keyRetry = append(p.keyRetry, r)
	}
}

// failKeys answers every request still waiting with ErrUnavailable: the
// processor stops.
func (p *Processor) failKeys() {
	err := fmt.Errorf("%w: kdedup is stopping", ErrUnavailable)
	for _, r := range p.txn.forgets {
		r.answer(KeyState{}, err)
	}
	p.txn.forgets = nil
	for _, r := range p.keyRetry {
		r.answer(KeyState{}, err)
	}
	p.keyRetry = nil
	for {
		select {
		case r := <-p.keyReqs:
			r.answer(KeyState{}, err)
		default:
			return
		}
	}
}
