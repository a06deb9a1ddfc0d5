package producer

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/dedup"
)

// Audit header names (docs/records.md).
const (
	HeaderReason  = "dedup.reason"
	HeaderStream  = "dedup.stream"
	HeaderKey     = "dedup.key"
	HeaderSource  = "dedup.source"
	HeaderFirst   = "dedup.first"
	HeaderFirstTS = "dedup.first_ts"
	// HeaderValueDropped is set, to the value's size in bytes, on an audit
	// record whose value the audit topic refused as too large: the record
	// is audited without its value rather than lost.
	HeaderValueDropped = "dedup.value_dropped"
	// HeaderStripped is set, on an audit record the audit topic refuses
	// as too large even without its value, to the size in bytes of what
	// was dropped besides: the record's Kafka key and its own headers (the
	// sum of their keys' and values' lengths). The record then carries
	// only the dedup.* headers of its decision; dedup.source tells where
	// the whole record is.
	HeaderStripped = "dedup.stripped"
	// HeaderKeyDropped is set, to the length of dedup.key in bytes, on a
	// stripped audit record the audit topic still refuses as too large:
	// its dedup.key is dropped too.
	HeaderKeyDropped = "dedup.key_dropped"
	// HeaderRefused is set, to the refusing topic, on an audit record of a
	// first-seen record its output topic refused.
	HeaderRefused = "dedup.refused_by"
	// HeaderRefusedError is set, to the broker's error code name (such as
	// INVALID_TIMESTAMP), on an audit record of a first-seen record its
	// output topic refused.
	HeaderRefusedError = "dedup.refused_error"
	// HeaderOriginalTS is set, to the record's own timestamp (Unix
	// milliseconds), on an audit record whose timestamp the audit topic
	// refused: it is audited with the time of auditing instead.
	HeaderOriginalTS = "dedup.original_ts"
	// HeaderOrigin is set, to the input record's coordinates
	// (topic/partition/offset), on a record the repartition step forwards
	// to its repartition topic. kdedup strips it again: output and audit
	// records carry the input record's own headers and coordinates.
	HeaderOrigin = "dedup.origin"
	// ReasonTooLarge is the dedup.reason of a first-seen record its output
	// topic refused as too large: it is audited instead (its key stays
	// first-seen, so copies of it are audited as duplicates).
	ReasonTooLarge = "too_large"
	// ReasonRefused is the dedup.reason of a first-seen record its output
	// topic refused for another property of the record itself: a timestamp
	// outside the topic's message.timestamp.before/after.max.ms, or a
	// record the topic cannot take (a compacted output and no key).
	ReasonRefused = "refused"
	// ReasonForgotten is the dedup.reason of the audit record an admin
	// forget of a key leaves (Forgotten): its value is empty.
	ReasonForgotten = "forgotten"
	// HeaderScope is set, on a forgotten record, to the scope values the
	// key was forgotten under, as a JSON array of strings.
	HeaderScope = "dedup.scope"
)

// Refusal reports whether err, a record's produce error, is a broker
// refusing that record for what it is: producing the same record again
// fails the same way, so retrying would loop. These are MESSAGE_TOO_LARGE,
// RECORD_LIST_TOO_LARGE, INVALID_TIMESTAMP and INVALID_RECORD.
func Refusal(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) ||
		errors.Is(err, kerr.InvalidTimestamp) || errors.Is(err, kerr.InvalidRecord)
}

func tooLarge(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge)
}

// Output returns the output record for in: the same key, value, headers
// and timestamp, partitioned as the package doc says. partitions is the
// output topic's partition count, inputPartitions the input's.
func Output(in *kgo.Record, topic string, partitions, inputPartitions int32) *kgo.Record {
	return &kgo.Record{
		Topic:     topic,
		Partition: OutputPartition(in, partitions, inputPartitions),
		Key:       in.Key,
		Value:     in.Value,
		Headers:   in.Headers,
		Timestamp: in.Timestamp,
	}
}

// OutputPartition returns the partition of in's output record.
func OutputPartition(in *kgo.Record, partitions, inputPartitions int32) int32 {
	if partitions == inputPartitions || partitions <= 0 {
		return in.Partition
	}
	if in.Key == nil {
		// Kafka would spread keyless records; a fixed choice keeps the
		// input partition's order.
		return in.Partition % partitions
	}
	return int32(keyPartitioner.Partition(in, int(partitions)))
}

// keyPartitioner is franz-go's Kafka default key partitioner,
// toPositive(murmur2(key)) % n with Kafka's murmur2 (franz-go exports its
// murmur2 only through it). It is built once: building it costs two
// allocations and ~5 KiB (the seeded rand of its sticky part) and about
// 10µs, against ~20ns to hash a key. For a non-nil key its Partition only
// hashes the key and never touches the sticky state (used only for nil
// keys, which OutputPartition does not pass it), so one value serves every
// topic and goroutine. Its ForTopic ignores the topic.
var keyPartitioner = kgo.StickyKeyPartitioner(nil).ForTopic("")

// Changelog returns a changelog record (key and value from package state)
// of the state of input partition inputPartition: changelog partition
// inputPartition modulo partitions, so that one changelog partition holds
// the changes of the same-numbered partition of every input.
func Changelog(topic string, partitions, inputPartition int32, key, value []byte) *kgo.Record {
	p := inputPartition
	if partitions > 0 {
		p %= partitions
	}
	return &kgo.Record{Topic: topic, Partition: p, Key: key, Value: value}
}

// Forward returns the record the repartition step writes for in: in's
// key, value, headers and timestamp, plus HeaderOrigin, to partition
// partition of topic.
func Forward(in *kgo.Record, topic string, partition int32) *kgo.Record {
	hs := make([]kgo.RecordHeader, len(in.Headers), len(in.Headers)+1)
	copy(hs, in.Headers)
	hs = append(hs, kgo.RecordHeader{Key: HeaderOrigin, Value: coordinates(in.Topic, in.Partition, in.Offset)})
	return &kgo.Record{Topic: topic, Partition: partition, Key: in.Key, Value: in.Value, Headers: hs, Timestamp: in.Timestamp}
}

// Unwrap returns the input record a repartitioned record r stands for:
// r with the coordinates of its HeaderOrigin (its last one) and without
// that header. ok is false when r has no valid HeaderOrigin.
func Unwrap(r *kgo.Record) (in *kgo.Record, ok bool) {
	at := -1
	for i := range r.Headers {
		if r.Headers[i].Key == HeaderOrigin {
			at = i
		}
	}
	if at < 0 {
		return nil, false
	}
	topic, partition, offset, ok := parseCoordinates(string(r.Headers[at].Value))
	if !ok {
		return nil, false
	}
	c := *r
	c.Topic, c.Partition, c.Offset = topic, partition, offset
	c.Headers = make([]kgo.RecordHeader, 0, len(r.Headers)-1)
	c.Headers = append(append(c.Headers, r.Headers[:at]...), r.Headers[at+1:]...)
	return &c, true
}

// parseCoordinates parses topic/partition/offset (the topic may hold '/'
// in principle: the last two fields are the numbers).
func parseCoordinates(s string) (topic string, partition int32, offset int64, ok bool) {
	j := strings.LastIndexByte(s, '/')
	if j <= 0 {
		return "", 0, 0, false
	}
	i := strings.LastIndexByte(s[:j], '/')
	if i <= 0 {
		return "", 0, 0, false
	}
	p, err1 := strconv.ParseInt(s[i+1:j], 10, 32)
	o, err2 := strconv.ParseInt(s[j+1:], 10, 64)
	if err1 != nil || err2 != nil || p < 0 || o < 0 {
		return "", 0, 0, false
	}
	return s[:i], int32(p), o, true
}

// reasonBytes are the reasons' header values, made once. Shared by every
// audit record: header values are never written to.
var reasonBytes = func() (bs [dedup.NumReasons][]byte) {
	for r := range bs {
		bs[r] = []byte(dedup.Reason(r).String())
	}
	return bs
}()

// Audit returns the audit record for in, decided d in stream: in's key,
// value, headers and timestamp, plus the dedup.* headers.
func Audit(in *kgo.Record, topic string, partitions int32, stream string, d *dedup.Decision) *kgo.Record {
	// The added header values share one buffer, sized for them all: two
	// allocations a record (headers, values), not one per value.
	dup := d.Reason == dedup.Duplicate || d.Reason == dedup.Conflict
	n := len(stream) + len(in.Topic) + 24
	if d.Key != nil {
		n += len(d.Key)
	}
	if dup {
		n += len(d.Entry.Topic) + 24 + 20
	}
	buf := make([]byte, 0, n)
	value := func(from int) []byte { return buf[from:len(buf):len(buf)] }
	hs := make([]kgo.RecordHeader, len(in.Headers), len(in.Headers)+6)
	copy(hs, in.Headers)
	var reason []byte
	if int(d.Reason) < len(reasonBytes) {
		reason = reasonBytes[d.Reason]
	} else {
		reason = []byte(d.Reason.String())
	}
	buf = append(buf, stream...)
	hs = append(hs,
		kgo.RecordHeader{Key: HeaderReason, Value: reason},
		kgo.RecordHeader{Key: HeaderStream, Value: value(0)},
	)
	if d.Key != nil {
		at := len(buf)
		buf = append(buf, d.Key...)
		hs = append(hs, kgo.RecordHeader{Key: HeaderKey, Value: value(at)})
	}
	at := len(buf)
	buf = appendCoordinates(buf, in.Topic, in.Partition, in.Offset)
	hs = append(hs, kgo.RecordHeader{Key: HeaderSource, Value: value(at)})
	if dup {
		at := len(buf)
		buf = appendCoordinates(buf, d.Entry.Topic, d.Entry.Partition, d.Entry.Offset)
		hs = append(hs, kgo.RecordHeader{Key: HeaderFirst, Value: value(at)})
		at = len(buf)
		buf = strconv.AppendInt(buf, d.Entry.FirstSeen, 10)
		hs = append(hs, kgo.RecordHeader{Key: HeaderFirstTS, Value: value(at)})
	}
	p := in.Partition
	if partitions > 0 {
		p %= partitions
	}
	return &kgo.Record{
		Topic:     topic,
		Partition: p,
		Key:       in.Key,
		Value:     in.Value,
		Headers:   hs,
		Timestamp: in.Timestamp,
	}
}

// Refused returns the audit record of first-seen record in that the output
// topic refused with err (a Refusal): reason too_large for its size,
// refused otherwise, with the refusing topic and the broker's error.
func Refused(in *kgo.Record, topic string, partitions int32, stream, output string, d *dedup.Decision, err error) *kgo.Record {
	r := Audit(in, topic, partitions, stream, d)
	reason := ReasonRefused
	if tooLarge(err) {
		reason = ReasonTooLarge
	}
	for i := range r.Headers {
		if r.Headers[i].Key == HeaderReason {
			r.Headers[i].Value = []byte(reason)
		}
	}
	r.Headers = append(r.Headers,
		kgo.RecordHeader{Key: HeaderRefused, Value: []byte(output)},
		kgo.RecordHeader{Key: HeaderRefusedError, Value: []byte(errorName(err))})
	return r
}

// Repaired returns a copy of audit record r that the audit topic can take
// after refusing r with err (a Refusal, or what a Writer remembers of
// several), or that it would refuse as too large: own is how many of r's
// headers are the input record's own (Audit puts them first), maxBytes the
// audit topic's max.message.bytes (0: not known). An invalid timestamp:
// stamped now with HeaderOriginalTS. Too large (refused so, or larger than
// maxBytes): cut in steps, each taken only when the one before is still
// too large or was refused as such (err says how often: a Writer's
// refusal counts the refusals of a record's cut forms): (1) without its
// value, with HeaderValueDropped; (2) stripped to the dedup.* headers of
// its decision, without its Kafka key and own headers, with
// HeaderStripped; (3) without dedup.key, with HeaderKeyDropped. What is
// left then is a few small headers kdedup writes, which any audit topic
// takes. Other refusals leave r as it is: the audit topic itself is
// misconfigured, and the transaction aborts until it is fixed.
func Repaired(r *kgo.Record, own int, err error, now time.Time, maxBytes int) *kgo.Record {
	c := *r
	c.Headers = append([]kgo.RecordHeader(nil), r.Headers...)
	own = min(max(own, 0), len(c.Headers))
	if errors.Is(err, kerr.InvalidTimestamp) {
		c.Timestamp = now
		c.Headers = append(c.Headers, kgo.RecordHeader{Key: HeaderOriginalTS, Value: strconv.AppendInt(nil, r.Timestamp.UnixMilli(), 10)})
	}
	level := refusedLevel(err)
	fits := func() bool { return maxBytes <= 0 || RecordBatchBytes(&c) <= maxBytes }
	if level < 1 && fits() {
		return &c
	}
	c.Value = nil
	c.Headers = append(c.Headers, kgo.RecordHeader{Key: HeaderValueDropped, Value: strconv.AppendInt(nil, int64(len(r.Value)), 10)})
	if level < 2 && fits() {
		return &c
	}
	dropped := len(c.Key)
	for _, h := range c.Headers[:own] {
		dropped += len(h.Key) + len(h.Value)
	}
	c.Key = nil
	c.Headers = append([]kgo.RecordHeader(nil), c.Headers[own:]...)
	c.Headers = append(c.Headers, kgo.RecordHeader{Key: HeaderStripped, Value: strconv.AppendInt(nil, int64(dropped), 10)})
	if level < 3 && fits() {
		return &c
	}
	hs := make([]kgo.RecordHeader, 0, len(c.Headers))
	keyLen := -1
	for _, h := range c.Headers {
		if h.Key == HeaderKey {
			keyLen = len(h.Value)
			continue
		}
		hs = append(hs, h)
	}
	if keyLen >= 0 {
		hs = append(hs, kgo.RecordHeader{Key: HeaderKeyDropped, Value: strconv.AppendInt(nil, int64(keyLen), 10)})
	}
	c.Headers = hs
	return &c
}

// cutLevel is how far Repaired cut audit record r, whose first own
// headers are the input's: 0 not at all, 1 its value dropped, 2 stripped,
// 3 its dedup.key dropped too.
func cutLevel(r *kgo.Record, own int) int {
	level := 0
	for _, h := range r.Headers[min(max(own, 0), len(r.Headers)):] {
		switch h.Key {
		case HeaderValueDropped:
			level = max(level, 1)
		case HeaderStripped:
			level = max(level, 2)
		case HeaderKeyDropped:
			level = max(level, 3)
		}
	}
	return level
}

// refusal is what a Writer remembers of the refusals of one record: the
// first (its error names the refusal in dedup.refused_error), whether one
// was for the record's timestamp, and to which level (Repaired) the record
// must be cut for its size: the refusals of its cut forms raise it.
type refusal struct {
	first     error
	timestamp bool
	size      int
}

func (r *refusal) Error() string { return r.first.Error() }

func (r *refusal) Unwrap() []error {
	errs := []error{r.first}
	if r.timestamp {
		errs = append(errs, kerr.InvalidTimestamp)
	}
	if r.size > 0 {
		errs = append(errs, kerr.MessageTooLarge)
	}
	return errs
}

// refusedLevel is the level Repaired must cut a record refused with err
// to at least: 0 for a refusal not of its size.
func refusedLevel(err error) int {
	var r *refusal
	if errors.As(err, &r) {
		return r.size
	}
	if tooLarge(err) {
		return 1
	}
	return 0
}

// addRefusal returns what old, the refusals remembered of a record (nil:
// none), and err, a new refusal of its form cut to level, add up to.
func addRefusal(old, err error, level int) error {
	r := &refusal{first: old}
	if old == nil {
		r.first = err
	}
	var o *refusal
	if errors.As(old, &o) {
		*r = *o
	}
	for _, e := range []error{old, err} {
		if errors.Is(e, kerr.InvalidTimestamp) {
			r.timestamp = true
		}
		r.size = max(r.size, refusedLevel(e))
	}
	if tooLarge(err) {
		r.size = max(r.size, level+1)
	}
	return r
}

// errorName is the Kafka error code name of err (INVALID_TIMESTAMP), or
// its text when it carries none.
func errorName(err error) string {
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Message
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

// Forgotten returns the audit record of an admin forget of key in stream:
// an empty value, timestamp at, and the headers dedup.reason (forgotten),
// dedup.stream, dedup.key, dedup.scope (the scope values, as JSON),
// dedup.first and dedup.first_ts (the forgotten entry's first-seen
// record). It goes to the audit partition of statePartition, the
// partition whose state held the key (the input's, or the repartition
// topic's), as the audit records of that partition's records do.
func Forgotten(topic string, partitions int32, stream string, statePartition int32, key []byte, scope []string, e *dedup.Entry, at time.Time) *kgo.Record {
	sc, _ := json.Marshal(scope) // a []string always marshals
	if scope == nil {
		sc = []byte("[]")
	}
	p := statePartition
	if partitions > 0 {
		p %= partitions
	}
	return &kgo.Record{
		Topic:     topic,
		Partition: p,
		Value:     []byte{},
		Timestamp: at,
		Headers: []kgo.RecordHeader{
			{Key: HeaderReason, Value: []byte(ReasonForgotten)},
			{Key: HeaderStream, Value: []byte(stream)},
			{Key: HeaderKey, Value: append([]byte(nil), key...)},
			{Key: HeaderScope, Value: sc},
			{Key: HeaderFirst, Value: coordinates(e.Topic, e.Partition, e.Offset)},
			{Key: HeaderFirstTS, Value: strconv.AppendInt(nil, e.FirstSeen, 10)},
		},
	}
}

func coordinates(topic string, partition int32, offset int64) []byte {
	return appendCoordinates(make([]byte, 0, len(topic)+24), topic, partition, offset)
}

// appendCoordinates appends topic/partition/offset to b.
func appendCoordinates(b []byte, topic string, partition int32, offset int64) []byte {
	b = append(b, topic...)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(partition), 10)
	b = append(b, '/')
	return strconv.AppendInt(b, offset, 10)
}
