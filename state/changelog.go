package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/kdedup/kdedup/dedup"
)

// The changelog carries every state change of every partition, written in
// the transaction that decided it, so that another instance can rebuild a
// partition's state from it (docs/architecture.md, "Restore"). Its records are keyed
// for log compaction: the latest record of each key is all a restore
// needs.
//
//	entry      key: 'e' | topic len uvarint | topic | partition varint | hash [16]
//	           value: the stored entry (appendEntry), or none: a tombstone,
//	           the key retired
//	marker     key: 'm' | topic len uvarint | topic | partition varint
//	           value: version | input varint | event time varint
//	sentinel   key: 's' | id; value: none. A restore's own write, read back
//	           to know it has seen everything committed before it.
//
// A transaction writes its partitions' entries and tombstones, then one
// marker per partition: the next input offset and the watermark the
// partition's state reflects once the transaction commits.
//
// Every kind but the sentinel starts its key with kind, topic and
// partition, and every kind added later must too: a reader then knows
// whose record a kind it does not know is, and refuses it for that
// partition (ErrVersion) instead of leaving a change out.
const (
	changeEntry    = 'e'
	changeMarker   = 'm'
	changeSentinel = 's'
	markerVersion  = 1
)

// ChangeKind is the kind of a changelog record.
type ChangeKind uint8

// Kinds of changelog records.
const (
	ChangeEntry ChangeKind = iota + 1
	ChangeMarker
	ChangeSentinel
)

// Change is one decoded changelog record.
type Change struct {
	Kind      ChangeKind
	Topic     string // the input topic-partition whose state changed (entry, marker)
	Partition int32
	// Hash and Entry are the stored key and entry (ChangeEntry); Deleted
	// marks a tombstone.
	Hash    dedup.Hash
	Entry   dedup.Entry
	Deleted bool
	// Input and EventTime are the marker's stamp (ChangeMarker).
	Input, EventTime int64
	// Sentinel is the sentinel's id (ChangeSentinel).
	Sentinel []byte
}

func appendChangeKey(b []byte, kind byte, topic string, partition int32) []byte {
	b = append(b, kind)
	b = binary.AppendUvarint(b, uint64(len(topic)))
	b = append(b, topic...)
	return binary.AppendVarint(b, int64(partition))
}

// EntryChange returns the changelog key and value that store e for h in
// topic/partition's state.
func EntryChange(topic string, partition int32, h dedup.Hash, e *dedup.Entry) (key, value []byte) {
	key = append(appendChangeKey(make([]byte, 0, 24+len(topic)), changeEntry, topic, partition), h[:]...)
	return key, appendEntry(make([]byte, 0, 40), e, topic, partition)
}

// Tombstone returns the changelog key whose record without a value deletes
// h from topic/partition's state.
func Tombstone(topic string, partition int32, h dedup.Hash) []byte {
	return append(appendChangeKey(make([]byte, 0, 24+len(topic)), changeEntry, topic, partition), h[:]...)
}

// MarkerChange returns the changelog key and value of a marker: after it,
// topic/partition's state reflects the input before offset input, with
// watermark eventTime.
func MarkerChange(topic string, partition int32, input, eventTime int64) (key, value []byte) {
	key = appendChangeKey(nil, changeMarker, topic, partition)
	value = binary.AppendVarint(binary.AppendVarint([]byte{markerVersion}, input), eventTime)
	return key, value
}

// SentinelKey returns the changelog key of a sentinel with id.
func SentinelKey(id []byte) []byte { return append([]byte{changeSentinel}, id...) }

// ErrVersion is returned, along with ErrCorrupt, for a changelog record or
// stored value written in a format version this build does not read: a
// newer kdedup wrote it. The error names the version.
var ErrVersion = errors.New("state: unknown format version")

// ParseChangeKey decodes the key of a changelog record only: its kind, the
// input topic and partition whose state it changes (entry, marker), the
// hash (entry) or the id (sentinel). A restore reads the key first and
// skips records of other partitions without decoding their values, so
// that a record it cannot read (another format version, another writer)
// stops only the restores of its own partition. A key that does not
// decode is ErrCorrupt; a key of a kind this build does not know is also
// ErrVersion, with the Topic and Partition it names set.
func ParseChangeKey(key []byte) (Change, error) {
	var c Change
	if len(key) == 0 {
		return c, fmt.Errorf("%w: empty changelog key", ErrCorrupt)
	}
	switch key[0] {
	case changeSentinel:
		c.Kind, c.Sentinel = ChangeSentinel, key[1:]
		return c, nil
	case changeEntry:
		c.Kind = ChangeEntry
	case changeMarker:
		c.Kind = ChangeMarker
	}
	d := decoder{b: key[1:]}
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		return Change{}, fmt.Errorf("%w: changelog key of %d bytes", ErrCorrupt, len(key))
	}
	c.Topic = string(d.bytes(int(n)))
	p := d.varint()
	if d.err || p < math.MinInt32 || p > math.MaxInt32 {
		return Change{}, fmt.Errorf("%w: changelog key of %d bytes", ErrCorrupt, len(key))
	}
	c.Partition = int32(p)
	if c.Kind == 0 {
		// A kind a newer kdedup writes, of topic/partition's state.
		return c, fmt.Errorf("%w: %w: changelog record kind %#x of %s/%d", ErrCorrupt, ErrVersion, key[0], c.Topic, c.Partition)
	}
	want := 0
	if c.Kind == ChangeEntry {
		want = len(c.Hash)
	}
	if len(d.b) != want {
		return Change{}, fmt.Errorf("%w: changelog key of %d bytes", ErrCorrupt, len(key))
	}
	copy(c.Hash[:], d.b)
	return c, nil
}

// ParseChange decodes a changelog record. A key or value that does not
// decode is ErrCorrupt; a value of a format version this build does not
// read is also ErrVersion.
func ParseChange(key, value []byte) (Change, error) {
	c, err := ParseChangeKey(key)
	if err != nil {
		return c, err
	}
	return c, c.decodeValue(value)
}

// DecodeValue completes a change whose key ParseChangeKey decoded with the
// record's value.
func (c *Change) DecodeValue(value []byte) error { return c.decodeValue(value) }

func (c *Change) decodeValue(value []byte) error {
	switch c.Kind {
	case ChangeEntry:
		if value == nil {
			c.Deleted = true
			return nil
		}
		e, err := decodeEntry(value, c.Topic, c.Partition)
		if err != nil {
			return err
		}
		c.Entry = e
	case ChangeMarker:
		if len(value) < 1 {
			return fmt.Errorf("%w: changelog marker without a value", ErrCorrupt)
		}
		if value[0] != markerVersion {
			return fmt.Errorf("%w: %w: changelog marker version %d (this build reads version %d)", ErrCorrupt, ErrVersion, value[0], markerVersion)
		}
		vd := decoder{b: value[1:]}
		c.Input, c.EventTime = vd.varint(), vd.varint()
		if vd.err || len(vd.b) != 0 {
			return fmt.Errorf("%w: changelog marker of %d bytes", ErrCorrupt, len(value))
		}
	}
	return nil
}
