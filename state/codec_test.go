package state

import (
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/kdedup/kdedup/dedup"
)

func TestEntryRoundTrip(t *testing.T) {
	for _, e := range []dedup.Entry{
		{FirstSeen: 1700000000000, Expiry: 1700003600000, Topic: "push-events", Partition: 3, Offset: 12345},
		{FirstSeen: math.MinInt64, Expiry: math.MaxInt64, Topic: "other", Partition: 3, Offset: -1},
		{FirstSeen: -5, Expiry: 10, Topic: "push-events", Partition: math.MaxInt32, Offset: math.MaxInt64, Fingerprint: dedup.Fingerprint{9, 9}},
		{Topic: "", Partition: math.MinInt32},
	} {
		b := appendEntry(nil, &e, "push-events", 3)
		got, err := decodeEntry(b, "push-events", 3)
		if err != nil || got != e {
			t.Errorf("round trip of %+v: %+v, %v", e, got, err)
		}
	}
	// The keyspace's own coordinates are left out of the value.
	own := appendEntry(nil, &dedup.Entry{FirstSeen: 1, Expiry: 2, Topic: "t", Partition: 1}, "t", 1)
	other := appendEntry(nil, &dedup.Entry{FirstSeen: 1, Expiry: 2, Topic: "u", Partition: 2}, "t", 1)
	if len(own) >= len(other) || len(own) > 2+1+1+16+1 {
		t.Errorf("entry in its own keyspace takes %d bytes, elsewhere %d", len(own), len(other))
	}
}

func TestStampRoundTrip(t *testing.T) {
	for _, s := range []Stamp{{}, {Input: 1, Changelog: 2, EventTime: math.MinInt64, Keys: 4}, {Input: math.MaxInt64, EventTime: math.MaxInt64}} {
		got, err := decodeStamp(appendStamp(nil, s))
		if err != nil || got != s {
			t.Errorf("round trip of %+v: %+v, %v", s, got, err)
		}
	}
}

// FuzzEntryCodec: any bytes decode to an entry or ErrCorrupt, never a panic,
// and whatever decodes re-encodes to the same bytes.
func FuzzEntryCodec(f *testing.F) {
	f.Add(appendEntry(nil, &dedup.Entry{FirstSeen: 1, Expiry: 3600001, Topic: "t", Partition: 0, Offset: 9}, "t", 0))
	f.Add(appendEntry(nil, &dedup.Entry{FirstSeen: -1, Expiry: 5, Topic: "u", Partition: 7, Offset: 9}, "t", 0))
	f.Add([]byte{1, 3, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEntry(b, "t", 0)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		// Non-canonical input (an explicit topic equal to the keyspace's,
		// over-long varints) re-encodes to other bytes, but to the same
		// entry.
		again := appendEntry(nil, &e, "t", 0)
		if e2, err := decodeEntry(again, "t", 0); err != nil || e2 != e {
			t.Fatalf("re-encoding %+v: %+v, %v", e, e2, err)
		}
		if len(again) > len(b) {
			t.Fatalf("re-encoding %x grew it to %x", b, again)
		}
	})
}

func FuzzStampCodec(f *testing.F) {
	f.Add(appendStamp(nil, Stamp{Input: 5, EventTime: math.MinInt64}))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeStamp(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		if s2, err := decodeStamp(appendStamp(nil, s)); err != nil || s2 != s {
			t.Fatalf("re-encoding %+v: %+v, %v", s, s2, err)
		}
	})
}

// FuzzParseChange: any changelog record decodes or fails with ErrCorrupt,
// never panics; what the encoders write decodes to what they were given.
func FuzzParseChange(f *testing.F) {
	var h dedup.Hash
	h[3] = 7
	e := dedup.Entry{FirstSeen: 1700000000000, Expiry: 1700003600000, Topic: "push-events", Partition: 2, Offset: 99}
	k, v := EntryChange("push-events", 2, h, &e)
	f.Add(k, v)
	f.Add(Tombstone("push-events", 2, h), []byte(nil))
	k, v = MarkerChange("order-events", 0, 12345, -5)
	f.Add(k, v)
	f.Add(SentinelKey([]byte("restore-1")), []byte(nil))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		c, err := ParseChange(key, value)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		var k2, v2 []byte
		switch {
		case c.Kind == ChangeSentinel:
			k2 = SentinelKey(c.Sentinel)
		case c.Kind == ChangeMarker:
			k2, v2 = MarkerChange(c.Topic, c.Partition, c.Input, c.EventTime)
		case c.Deleted:
			k2 = Tombstone(c.Topic, c.Partition, c.Hash)
		default:
			k2, v2 = EntryChange(c.Topic, c.Partition, c.Hash, &c.Entry)
		}
		c2, err := ParseChange(k2, v2)
		if err != nil {
			t.Fatalf("re-encoded %+v does not decode: %v", c, err)
		}
		if fmt.Sprint(c2) != fmt.Sprint(c) {
			t.Fatalf("round trip: %+v, then %+v", c, c2)
		}
	})
}
