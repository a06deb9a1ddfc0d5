package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/kdedup/kdedup/dedup"
)

// ErrCorrupt is returned for a stored value that does not decode.
var ErrCorrupt = errors.New("state: corrupt value")

const (
	entryVersion = 1
	stampVersion = 1
	// stampAheadVersion is the stamp of a keyspace that holds changes
	// ahead of it (Stamp.Ahead): version 1's fields and a flags byte. It
	// is written only then, so that every other stamp stays version 1,
	// and a kdedup that predates the flag refuses such a keyspace rather
	// than trust it.
	stampAheadVersion = 2
	stampFlagAhead    = 1 << 0

	flagTopic     = 1 << 0 // the first-seen record is in another topic than the keyspace's
	flagPartition = 1 << 1 // ... or another partition
)

// appendEntry encodes e. Times are varints, Expiry as its distance from
// FirstSeen (usually the TTL: a few bytes); the coordinates are left out
// when they are the keyspace's own, which they are unless records were
// repartitioned. Layout, version 1:
//
//	version byte | flags byte | firstSeen varint | expiry-firstSeen uvarint |
//	fingerprint [16] | offset varint | [partition varint] | [topic len uvarint, topic]
func appendEntry(b []byte, e *dedup.Entry, topic string, partition int32) []byte {
	var flags byte
	if e.Topic != topic {
		flags |= flagTopic
	}
	if e.Partition != partition {
		flags |= flagPartition
	}
	b = append(b, entryVersion, flags)
	b = binary.AppendVarint(b, e.FirstSeen)
	b = binary.AppendUvarint(b, uint64(e.Expiry)-uint64(e.FirstSeen))
	b = append(b, e.Fingerprint[:]...)
	b = binary.AppendVarint(b, e.Offset)
	if flags&flagPartition != 0 {
		b = binary.AppendVarint(b, int64(e.Partition))
	}
	if flags&flagTopic != 0 {
		b = binary.AppendUvarint(b, uint64(len(e.Topic)))
		b = append(b, e.Topic...)
	}
	return b
}

// decodeEntry decodes what appendEntry wrote; topic and partition are the
// keyspace's, used when the entry leaves them out.
func decodeEntry(b []byte, topic string, partition int32) (dedup.Entry, error) {
	var e dedup.Entry
	if len(b) < 2 {
		return e, fmt.Errorf("%w: entry of %d bytes", ErrCorrupt, len(b))
	}
	if b[0] != entryVersion {
		return e, fmt.Errorf("%w: %w: entry version %d (this build reads version %d)", ErrCorrupt, ErrVersion, b[0], entryVersion)
	}
	flags := b[1]
	if flags&^(flagTopic|flagPartition) != 0 {
		return e, fmt.Errorf("%w: entry flags %#x", ErrCorrupt, flags)
	}
	d := decoder{b: b[2:]}
	e.FirstSeen = d.varint()
	e.Expiry = int64(uint64(e.FirstSeen) + d.uvarint())
	copy(e.Fingerprint[:], d.bytes(len(e.Fingerprint)))
	e.Offset = d.varint()
	e.Topic, e.Partition = topic, partition
	if flags&flagPartition != 0 {
		p := d.varint()
		if p < math.MinInt32 || p > math.MaxInt32 {
			d.fail()
		}
		e.Partition = int32(p)
	}
	if flags&flagTopic != 0 {
		n := d.uvarint()
		if n > uint64(len(d.b)) {
			d.fail()
		} else {
			e.Topic = string(d.bytes(int(n)))
		}
	}
	if d.err || len(d.b) != 0 {
		return dedup.Entry{}, fmt.Errorf("%w: entry of %d bytes", ErrCorrupt, len(b))
	}
	return e, nil
}

// Stamp says which offsets a partition's state reflects. It is written in
// the same Pebble batch as the key changes it describes, so after a crash
// the state and its stamp always agree.
type Stamp struct {
	// Input is the next input offset to decide: the state reflects every
	// record before it. 0 for a new keyspace.
	Input int64
	// Changelog is the next changelog offset: the state reflects every
	// changelog record before it. 0 for a new keyspace.
	Changelog int64
	// EventTime is the newest record timestamp decided (the watermark that
	// retires keys), math.MinInt64 before any.
	EventTime int64
	// Keys counts the stored keys (live or retired but not yet collected).
	Keys int64
	// Ahead marks a keyspace that may hold changes of transactions beyond
	// Input: a restore wrote them before reading the marker that would
	// show them committed at or below its target (to bound its memory),
	// and stopped before that marker. Such a state is never trusted as it
	// stands: it is restored (and the changes confirmed or the keyspace
	// dropped) before any record is decided.
	Ahead bool
}

func appendStamp(b []byte, s Stamp) []byte {
	if s.Ahead {
		b = append(b, stampAheadVersion)
	} else {
		b = append(b, stampVersion)
	}
	b = binary.AppendVarint(b, s.Input)
	b = binary.AppendVarint(b, s.Changelog)
	b = binary.AppendVarint(b, s.EventTime)
	b = binary.AppendVarint(b, s.Keys)
	if s.Ahead {
		b = append(b, stampFlagAhead)
	}
	return b
}

func decodeStamp(b []byte) (Stamp, error) {
	if len(b) < 1 {
		return Stamp{}, fmt.Errorf("%w: empty stamp", ErrCorrupt)
	}
	if b[0] != stampVersion && b[0] != stampAheadVersion {
		return Stamp{}, fmt.Errorf("%w: %w: stamp version %d (this build reads versions %d and %d)", ErrCorrupt, ErrVersion, b[0], stampVersion, stampAheadVersion)
	}
	d := decoder{b: b[1:]}
	s := Stamp{Input: d.varint(), Changelog: d.varint(), EventTime: d.varint(), Keys: d.varint()}
	if b[0] == stampAheadVersion {
		flags := d.bytes(1)
		if len(flags) != 1 || flags[0] != stampFlagAhead {
			d.fail()
		}
		s.Ahead = true
	}
	if d.err || len(d.b) != 0 {
		return Stamp{}, fmt.Errorf("%w: stamp of %d bytes", ErrCorrupt, len(b))
	}
	return s, nil
}

// decoder reads varints and byte runs, remembering the first failure so
// that a decode function checks once at the end.
type decoder struct {
	b   []byte
	err bool
}

func (d *decoder) fail() { d.err, d.b = true, nil }

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(n int) []byte {
	if n > len(d.b) {
		d.fail()
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}
