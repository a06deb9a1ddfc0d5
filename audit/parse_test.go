package audit

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/producer"
)

var now = time.Date(2025, 3, 4, 12, 0, 0, 0, time.UTC)

func TestParseSince(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Time
		err  string
	}{
		{in: "1h", want: now.Add(-time.Hour)},
		{in: "90m", want: now.Add(-90 * time.Minute)},
		{in: "7d", want: now.Add(-7 * 24 * time.Hour)},
		{in: "1d12h", want: now.Add(-36 * time.Hour)},
		{in: "2025-03-01T00:00:00Z", want: time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)},
		{in: "", err: "empty"},
		{in: "0s", err: "positive"},
		{in: "-1h", err: "positive"},
		{in: "1d-25h", err: "positive"},
		{in: "yesterday", err: "neither a duration"},
		{in: "+1d", err: "day count"},
		{in: "d", err: "day count"},
		{in: "1h2d", err: "day count"},
		{in: "999999999d", err: "too long"},
		{in: "106751d23h59m", err: "too long"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSince(tc.in, now)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseSince(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || !got.Equal(tc.want) {
				t.Fatalf("ParseSince(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}

// FuzzParseSince: never panics; a duration it accepts lies in the past.
func FuzzParseSince(f *testing.F) {
	for _, s := range []string{"1h", "7d", "1d12h", "2025-03-01T00:00:00Z", "-1h", "0d", "106751d", "1d1d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseSince(s, now)
		if err != nil {
			return
		}
		if _, perr := time.Parse(time.RFC3339Nano, s); perr != nil && !got.Before(now) {
			t.Fatalf("ParseSince(%q) = %v: not before now", s, got)
		}
	})
}

func TestParseCoordinates(t *testing.T) {
	for _, tc := range []struct {
		in, def string
		want    Coordinates
		err     string
	}{
		{in: "dedup.audit/0/42", want: Coordinates{"dedup.audit", 0, 42}},
		{in: "push-events/7/0", want: Coordinates{"push-events", 7, 0}},
		{in: "3/9", def: "dedup.audit", want: Coordinates{"dedup.audit", 3, 9}},
		{in: "3/9", err: "wrong number of fields"},
		{in: "a/b/1/2", def: "x", err: "wrong number of fields"},
		{in: "", err: "wrong number of fields"},
		{in: "/1/2", err: "not a topic name"},
		{in: "../1/2", err: "not a topic name"},
		{in: "a b/1/2", err: "not allowed"},
		{in: strings.Repeat("t", 250) + "/1/2", err: "longer than 249"},
		{in: "t/-1/2", err: "partition"},
		{in: "t/+1/2", err: "partition"},
		{in: "t/2147483648/2", err: "partition \"2147483648\" is out of range"},
		{in: "t/1/", err: "offset is empty"},
		{in: "t/1/x", err: "offset"},
		{in: "t/1/9223372036854775808", err: "out of range"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseCoordinates(tc.in, tc.def)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "malformed record coordinates") {
					t.Fatalf("ParseCoordinates(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseCoordinates(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			if got.String() != tc.want.String() {
				t.Fatalf("String() = %q", got.String())
			}
		})
	}
}

// FuzzParseCoordinates: never panics; what it accepts prints back to
// coordinates that parse to the same.
func FuzzParseCoordinates(f *testing.F) {
	for _, s := range []string{"dedup.audit/0/42", "t/1/2", "1/2", "a/b/c", "t/2147483647/9223372036854775807", "t//"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCoordinates(s, "dflt")
		if err != nil {
			return
		}
		if c.Partition < 0 || c.Offset < 0 {
			t.Fatalf("ParseCoordinates(%q) = %+v: negative", s, c)
		}
		again, err := ParseCoordinates(c.String(), "")
		if err != nil || again != c {
			t.Fatalf("ParseCoordinates(%q) = %+v, but its String %q parses to %+v, %v", s, c, c.String(), again, err)
		}
	})
}

// record returns a record with headers name, value, name, value, ...
func record(value string, headers ...string) *kgo.Record {
	r := &kgo.Record{Topic: "dedup.audit", Value: []byte(value), Timestamp: now}
	for i := 0; i+1 < len(headers); i += 2 {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: headers[i], Value: []byte(headers[i+1])})
	}
	return r
}

func TestNewFilter(t *testing.T) {
	streams := []string{"push", "orders"}
	for _, tc := range []struct {
		name, stream, reason, key string
		err                       string
	}{
		{name: "all"},
		{name: "stream", stream: "push"},
		{name: "every reason", reason: "forgotten"},
		{name: "too_large", reason: "too_large"},
		{name: "key only", key: "anything"},
		{name: "unknown stream", stream: "pushes", err: `unknown stream "pushes" (configured streams: push, orders)`},
		{name: "unknown reason", reason: "dup", err: `unknown reason "dup" (reasons: duplicate, conflict, invalid_key, missing_key, malformed, too_large, refused, forgotten)`},
		{name: "first_seen is never audited", reason: "first_seen", err: "unknown reason"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := NewFilter(streams, tc.stream, tc.reason, tc.key)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("NewFilter = %+v, %v; want %q", f, err, tc.err)
				}
				return
			}
			if err != nil || f != (Filter{tc.stream, tc.reason, tc.key}) {
				t.Fatalf("NewFilter = %+v, %v", f, err)
			}
		})
	}
}

// FuzzNewFilter: never panics; a filter it accepts matches a record with
// exactly its values, and one it refuses names the bad value.
func FuzzNewFilter(f *testing.F) {
	f.Add("push", "duplicate", "k1")
	f.Add("", "", "")
	f.Add("nope", "conflict", "")
	f.Add("orders", "bogus", "k")
	f.Fuzz(func(t *testing.T, stream, reason, key string) {
		flt, err := NewFilter([]string{"push", "orders"}, stream, reason, key)
		if err != nil {
			if !strings.Contains(err.Error(), "unknown") {
				t.Fatalf("NewFilter error %v", err)
			}
			return
		}
		r := record("", producer.HeaderStream, stream, producer.HeaderReason, reason, producer.HeaderKey, key)
		if !flt.Match(r) {
			t.Fatalf("%+v does not match its own record", flt)
		}
	})
}

func TestFilterMatch(t *testing.T) {
	dup := record("v", producer.HeaderReason, "duplicate", producer.HeaderStream, "push", producer.HeaderKey, "k1")
	missing := record("v", producer.HeaderReason, "missing_key", producer.HeaderStream, "push")
	// A repeated header: the last value counts (kdedup appends its own
	// after the input's).
	spoofed := record("v", producer.HeaderStream, "orders", producer.HeaderReason, "conflict", producer.HeaderStream, "push", producer.HeaderKey, "k2")
	for _, tc := range []struct {
		name string
		f    Filter
		r    *kgo.Record
		want bool
	}{
		{"zero filter", Filter{}, dup, true},
		{"stream", Filter{Stream: "push"}, dup, true},
		{"other stream", Filter{Stream: "orders"}, dup, false},
		{"reason", Filter{Reason: "duplicate"}, dup, true},
		{"other reason", Filter{Reason: "conflict"}, dup, false},
		{"key", Filter{Key: "k1"}, dup, true},
		{"other key", Filter{Key: "k2"}, dup, false},
		{"key of a record without one", Filter{Key: "k1"}, missing, false},
		{"all three", Filter{"push", "duplicate", "k1"}, dup, true},
		{"two of three", Filter{"push", "duplicate", "k2"}, dup, false},
		{"last header wins", Filter{Stream: "push"}, spoofed, true},
		{"earlier header ignored", Filter{Stream: "orders"}, spoofed, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.f.Match(tc.r); got != tc.want {
				t.Fatalf("Match = %v, want %v", got, tc.want)
			}
		})
	}
}
