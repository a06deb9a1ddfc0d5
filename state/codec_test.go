package state

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
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

// Golden byte vectors. Every format kdedup writes to disk (Pebble keys and
// values) or to the changelog topic has a file in testdata/ holding the exact
// bytes that today's code writes for the values of goldenRecords, and
// TestGolden checks both ways: encoding the values gives exactly the
// golden bytes, and decoding the golden bytes gives the values. State
// directories and changelogs outlive a kdedup version, so a format change
// must be a decision (a new version byte, a reader for the old one), not
// an accident of a refactoring; this test makes it show up in review.
//
// A file NAME.hex has a "key:" and/or a "value:" section of hex bytes;
// "#" starts a comment; white space is ignored. A record without a value
// section has a nil value (a changelog tombstone or sentinel).
//
// After an intended format change, run
//
//	go test ./state -run TestGolden -update
//
// to rewrite the files from today's encodings, then review the diff (and
// keep a reader for the old format, or say in the commit why none is
// needed).
var update = flag.Bool("update", false, "rewrite testdata/*.hex from today's encodings (see TestGolden)")

type goldenRecord struct {
	name       string // testdata/NAME.hex
	about      string // the file's comment
	key, value []byte // today's encoding; nil: no such section
	// decode checks that the golden key and value decode to the values.
	decode func(key, value []byte) error
}

// Values of the golden records: the hash and fingerprint are counting
// bytes, so that their place in the bytes is easy to see.
var (
	goldenHash  = dedup.Hash{0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f}
	goldenFP    = dedup.Fingerprint{0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff}
	goldenTopic = "push-events"
	goldenPart  = int32(3)
	// An entry in its own keyspace: no coordinates but the offset.
	goldenEntry = dedup.Entry{FirstSeen: 1700000000000, Expiry: 1700003600000, Fingerprint: goldenFP, Topic: goldenTopic, Partition: goldenPart, Offset: 12345}
	// An entry first seen in another topic and partition (repartitioned),
	// with negative times.
	goldenEntryElsewhere = dedup.Entry{FirstSeen: -5, Expiry: 10, Fingerprint: goldenFP, Topic: "push-events.repartition", Partition: 7, Offset: 0}
	// Saturated times: Expiry - FirstSeen overflows int64 (the uvarint
	// holds it as uint64); another partition, the same topic.
	goldenEntryExtremes = dedup.Entry{FirstSeen: math.MinInt64, Expiry: math.MaxInt64, Topic: goldenTopic, Partition: 0, Offset: math.MaxInt64}
	goldenStamp         = Stamp{Input: 12346, Changelog: 1 << 40, EventTime: 1700000000000, Keys: 3}
	goldenStampNew      = Stamp{EventTime: math.MinInt64}
	// A keyspace an interrupted restore left holding changes ahead of its
	// marker (version 2: a flags byte).
	goldenStampAhead = Stamp{Input: 12346, Changelog: 1 << 40, EventTime: 1700000000000, Keys: 3, Ahead: true}
)

func goldenRecords() []goldenRecord {
	prefix := keyspacePrefix(goldenTopic, goldenPart)
	entryValue := func(want dedup.Entry) func(_, v []byte) error {
		return func(_, v []byte) error {
			got, err := decodeEntry(v, goldenTopic, goldenPart)
			return diffValues(got, err, want)
		}
	}
	stampValue := func(want Stamp) func(_, v []byte) error {
		return func(_, v []byte) error {
			got, err := decodeStamp(v)
			return diffValues(got, err, want)
		}
	}
	change := func(want Change) func(k, v []byte) error {
		return func(k, v []byte) error {
			got, err := ParseChange(k, v)
			if err == nil && !reflect.DeepEqual(got, want) {
				return fmt.Errorf("decodes to %+v, want %+v", got, want)
			}
			return err
		}
	}
	// Pebble keys have no decoder of their own: parsePrefix reads the
	// keyspace, the rest is checked here as Retire and Keyspaces read it.
	pebbleKey := func(kind byte, retire int64, h *dedup.Hash) func(k, _ []byte) error {
		return func(k, _ []byte) error {
			topic, partition, n, ok := parsePrefix(k)
			if !ok || topic != goldenTopic || partition != goldenPart {
				return fmt.Errorf("keyspace %q/%d (%v), want %s/%d", topic, partition, ok, goldenTopic, goldenPart)
			}
			rest := k[n:]
			if kind == 0 {
				if len(rest) != 0 {
					return fmt.Errorf("%d bytes after the keyspace prefix", len(rest))
				}
				return nil
			}
			if len(rest) == 0 || rest[0] != kind {
				return fmt.Errorf("kind %q, want %q", rest[:min(1, len(rest))], kind)
			}
			rest = rest[1:]
			if kind == kindRetire {
				if len(rest) < 8 {
					return fmt.Errorf("retire key of %d bytes", len(k))
				}
				if got := int64(binary.BigEndian.Uint64(rest) ^ 1<<63); got != retire {
					return fmt.Errorf("retires at %d, want %d", got, retire)
				}
				rest = rest[8:]
			}
			var want []byte
			if h != nil {
				want = h[:]
			}
			if !bytes.Equal(rest, want) {
				return fmt.Errorf("hash %x, want %x", rest, want)
			}
			return nil
		}
	}
	ceKey, ceValue := EntryChange(goldenTopic, goldenPart, goldenHash, &goldenEntry)
	ceoKey, ceoValue := EntryChange(goldenTopic, goldenPart, goldenHash, &goldenEntryElsewhere)
	mKey, mValue := MarkerChange(goldenTopic, goldenPart, 12346, 1700000000000)
	mnKey, mnValue := MarkerChange("order-events", 0, 0, math.MinInt64)
	h := goldenHash
	return []goldenRecord{
		{
			name:   "entry",
			about:  "Pebble value of an entry in its own keyspace push-events/3 (appendEntry): " + fmt.Sprintf("%+v", goldenEntry),
			value:  appendEntry(nil, &goldenEntry, goldenTopic, goldenPart),
			decode: entryValue(goldenEntry),
		},
		{
			name:   "entry-elsewhere",
			about:  "Pebble value of an entry first seen in another topic and partition, keyspace push-events/3: " + fmt.Sprintf("%+v", goldenEntryElsewhere),
			value:  appendEntry(nil, &goldenEntryElsewhere, goldenTopic, goldenPart),
			decode: entryValue(goldenEntryElsewhere),
		},
		{
			name:  "entry-extremes",
			about: "Pebble value of an entry with saturated times, another partition, keyspace push-events/3: " + fmt.Sprintf("%+v", goldenEntryExtremes),
			value: appendEntry(nil, &goldenEntryExtremes, goldenTopic, goldenPart),
			decode: func(_, v []byte) error {
				got, err := decodeEntry(v, goldenTopic, goldenPart)
				return diffValues(got, err, goldenEntryExtremes)
			},
		},
		{
			name:   "stamp",
			about:  "Pebble value of a keyspace's stamp (appendStamp): " + fmt.Sprintf("%+v", goldenStamp),
			value:  appendStamp(nil, goldenStamp),
			decode: stampValue(goldenStamp),
		},
		{
			name:   "stamp-new",
			about:  "Pebble value of a new keyspace's stamp, before any record: " + fmt.Sprintf("%+v", goldenStampNew),
			value:  appendStamp(nil, goldenStampNew),
			decode: stampValue(goldenStampNew),
		},
		{
			name:   "stamp-ahead",
			about:  "Pebble value of the stamp of a keyspace holding changes ahead of it: " + fmt.Sprintf("%+v", goldenStampAhead),
			value:  appendStamp(nil, goldenStampAhead),
			decode: stampValue(goldenStampAhead),
		},
		{
			name:  "pebble-keyspace",
			about: "Pebble key prefix of keyspace push-events/3 (keyspacePrefix)",
			key:   prefix, decode: pebbleKey(0, 0, nil),
		},
		{
			name:  "pebble-entry-key",
			about: "Pebble key of an entry of push-events/3 (appendEntryKey), hash 000102..0f",
			key:   appendEntryKey(nil, prefix, goldenHash), decode: pebbleKey(kindEntry, 0, &h),
		},
		{
			name:  "pebble-retire-key",
			about: "Pebble key of the retirement index of push-events/3 at 1700007200000 (appendRetireKey), hash 000102..0f",
			key:   appendRetireKey(nil, prefix, 1700007200000, goldenHash), decode: pebbleKey(kindRetire, 1700007200000, &h),
		},
		{
			name:  "pebble-retire-key-negative",
			about: "Pebble key of the retirement index of push-events/3 at -5: the sign bit flipped, so that byte order is time order",
			key:   appendRetireKey(nil, prefix, -5, goldenHash), decode: pebbleKey(kindRetire, -5, &h),
		},
		{
			name:  "pebble-stamp-key",
			about: "Pebble key of the stamp of push-events/3 (stampKey)",
			key:   stampKey(prefix), decode: pebbleKey(kindStamp, 0, nil),
		},
		{
			name:   "changelog-entry",
			about:  "changelog record storing an entry of push-events/3 (EntryChange), hash 000102..0f: " + fmt.Sprintf("%+v", goldenEntry),
			key:    ceKey,
			value:  ceValue,
			decode: change(Change{Kind: ChangeEntry, Topic: goldenTopic, Partition: goldenPart, Hash: goldenHash, Entry: goldenEntry}),
		},
		{
			name:   "changelog-entry-elsewhere",
			about:  "changelog record storing an entry of push-events/3 first seen elsewhere (EntryChange): " + fmt.Sprintf("%+v", goldenEntryElsewhere),
			key:    ceoKey,
			value:  ceoValue,
			decode: change(Change{Kind: ChangeEntry, Topic: goldenTopic, Partition: goldenPart, Hash: goldenHash, Entry: goldenEntryElsewhere}),
		},
		{
			name:   "changelog-tombstone",
			about:  "changelog tombstone deleting hash 000102..0f from push-events/3 (Tombstone); no value",
			key:    Tombstone(goldenTopic, goldenPart, goldenHash),
			decode: change(Change{Kind: ChangeEntry, Topic: goldenTopic, Partition: goldenPart, Hash: goldenHash, Deleted: true}),
		},
		{
			name:   "changelog-marker",
			about:  "changelog marker of push-events/3: input 12346, event time 1700000000000 (MarkerChange)",
			key:    mKey,
			value:  mValue,
			decode: change(Change{Kind: ChangeMarker, Topic: goldenTopic, Partition: goldenPart, Input: 12346, EventTime: 1700000000000}),
		},
		{
			name:   "changelog-marker-new",
			about:  "changelog marker of order-events/0 before any record: input 0, event time math.MinInt64 (MarkerChange)",
			key:    mnKey,
			value:  mnValue,
			decode: change(Change{Kind: ChangeMarker, Topic: "order-events", Partition: 0, EventTime: math.MinInt64}),
		},
		{
			name:   "changelog-sentinel",
			about:  `changelog sentinel with id "restore-host-1-0001" (SentinelKey); no value`,
			key:    SentinelKey([]byte("restore-host-1-0001")),
			decode: change(Change{Kind: ChangeSentinel, Sentinel: []byte("restore-host-1-0001")}),
		},
	}
}

func diffValues[T comparable](got T, err error, want T) error {
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("decodes to %+v, want %+v", got, want)
	}
	return nil
}

func TestGolden(t *testing.T) {
	recs := goldenRecords()
	names := map[string]bool{}
	for _, r := range recs {
		names[r.name+".hex"] = true
		t.Run(r.name, func(t *testing.T) {
			file := filepath.Join("testdata", r.name+".hex")
			if *update {
				if err := os.WriteFile(file, formatGolden(r), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			text, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run go test ./state -run TestGolden -update to write it)", err)
			}
			key, value, err := parseGolden(text)
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			// (a) Today's encoding is the golden bytes.
			for _, s := range []struct {
				section   string
				got, want []byte
			}{{"key", r.key, key}, {"value", r.value, value}} {
				if !bytes.Equal(s.got, s.want) || (s.got == nil) != (s.want == nil) {
					t.Errorf("%s: the %s encoded today differs from the golden bytes (a format change? see TestGolden):\n%s",
						file, s.section, hexDiff(s.want, s.got))
				}
			}
			// (b) The golden bytes decode to the values.
			if err := r.decode(key, value); err != nil {
				t.Errorf("%s: the golden bytes do not decode to the values: %v", file, err)
			}
		})
	}
	// Every golden file belongs to a record: a dropped record keeps no
	// stale file that nothing checks.
	files, err := filepath.Glob(filepath.Join("testdata", "*.hex"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !names[filepath.Base(f)] {
			t.Errorf("%s: no golden record of that name", f)
		}
	}
}

// formatGolden renders r's file: the comment, then the key and value
// sections, 16 bytes a line.
func formatGolden(r goldenRecord) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s\n# Checked by TestGolden (state/codec_test.go); -update rewrites this file.\n", r.about)
	for _, s := range []struct {
		name string
		b    []byte
	}{{"key", r.key}, {"value", r.value}} {
		if s.b == nil {
			continue
		}
		fmt.Fprintf(&b, "%s: # %d bytes\n", s.name, len(s.b))
		for i := 0; i < len(s.b); i += 16 {
			line := s.b[i:min(i+16, len(s.b))]
			for j, c := range line {
				if j > 0 {
					b.WriteByte(' ')
				}
				fmt.Fprintf(&b, "%02x", c)
			}
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// parseGolden reads a golden file's key and value sections (nil when
// absent).
func parseGolden(text []byte) (key, value []byte, err error) {
	var cur *[]byte
	for n, line := range strings.Split(string(text), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		for _, f := range strings.Fields(line) {
			switch f {
			case "key:":
				if key != nil {
					return nil, nil, fmt.Errorf("line %d: a second key section", n+1)
				}
				key, cur = []byte{}, &key
				continue
			case "value:":
				if value != nil {
					return nil, nil, fmt.Errorf("line %d: a second value section", n+1)
				}
				value, cur = []byte{}, &value
				continue
			}
			if cur == nil {
				return nil, nil, fmt.Errorf("line %d: bytes before a key: or value: section", n+1)
			}
			b, err := hex.DecodeString(f)
			if err != nil {
				return nil, nil, fmt.Errorf("line %d: %v", n+1, err)
			}
			*cur = append(*cur, b...)
		}
	}
	return key, value, nil
}

// hexDiff shows want (golden) and got (today) in hex and where they part.
func hexDiff(want, got []byte) string {
	show := func(b []byte) string {
		if b == nil {
			return "(none)"
		}
		return hex.EncodeToString(b)
	}
	i := 0
	for i < len(want) && i < len(got) && want[i] == got[i] {
		i++
	}
	return fmt.Sprintf("  golden: %s\n  today:  %s\n  first difference at byte %d (golden %d bytes, today %d)", show(want), show(got), i, len(want), len(got))
}

// TestParseChangeRefusesFutureVersions: a changelog record written by a
// newer kdedup in a format version this build does not read is refused,
// never misread, as ErrCorrupt and ErrVersion, with an error that names
// the version.
func TestParseChangeRefusesFutureVersions(t *testing.T) {
	eKey, eValue := EntryChange(goldenTopic, goldenPart, goldenHash, &goldenEntry)
	mKey, mValue := MarkerChange(goldenTopic, goldenPart, 12346, 1700000000000)
	for _, v := range []byte{2, 0xff} {
		for _, r := range []struct {
			kind       string
			key, value []byte
		}{{"entry", eKey, eValue}, {"marker", mKey, mValue}} {
			value := append([]byte{v}, r.value[1:]...) // the version byte leads the value
			c, err := ParseChange(r.key, value)
			switch {
			case err == nil:
				t.Errorf("%s of version %d accepted: %+v", r.kind, v, c)
			case !errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrVersion):
				t.Errorf("%s of version %d: error %v is not ErrCorrupt and ErrVersion", r.kind, v, err)
			case !strings.Contains(err.Error(), fmt.Sprintf("version %d", v)):
				t.Errorf("%s of version %d: error %q does not name the version", r.kind, v, err)
			}
		}
	}
}
