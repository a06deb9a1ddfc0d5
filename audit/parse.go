package audit

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// DefaultSince is how far back tail and stats start when given neither a
// start time nor "from the beginning": the last hour.
const DefaultSince = time.Hour

// maxDays is the most days a time.Duration holds.
const maxDays = math.MaxInt64 / int64(24*time.Hour)

// ParseSince parses the start of a time range and returns that time,
// relative to now: a positive duration back from now, either Go's syntax
// (90m, 1h30m) or whole days first (7d, 1d12h); or an absolute RFC 3339
// time (2025-01-02T15:04:05Z).
func ParseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, errors.New("empty duration")
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := parseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (90m, 1h, 7d) nor an RFC 3339 time: %w", s, err)
	}
	return now.Add(-d), nil
}

// parseDuration parses a positive Go duration, optionally preceded by whole
// days (7d, 1d12h).
func parseDuration(s string) (time.Duration, error) {
	var days int64
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil || n < 0 || s[0] == '+' {
			return 0, fmt.Errorf("bad day count %q", s[:i])
		}
		if n > maxDays {
			return 0, errors.New("too long")
		}
		days, s = n, s[i+1:]
	}
	var rest time.Duration
	if s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, err
		}
		rest = d
	}
	if rest < 0 {
		return 0, errors.New("must be positive")
	}
	d := time.Duration(days) * 24 * time.Hour
	if d > math.MaxInt64-rest {
		return 0, errors.New("too long")
	}
	if d += rest; d <= 0 {
		return 0, errors.New("must be positive")
	}
	return d, nil
}

// Coordinates locate one record: topic/partition/offset, the form of the
// dedup.source and dedup.first headers.
type Coordinates struct {
	Topic     string
	Partition int32
	Offset    int64
}

// String returns c as topic/partition/offset.
func (c Coordinates) String() string {
	return c.Topic + "/" + strconv.FormatInt(int64(c.Partition), 10) + "/" + strconv.FormatInt(c.Offset, 10)
}

// ParseCoordinates parses TOPIC/PARTITION/OFFSET, or PARTITION/OFFSET in
// topic defaultTopic when that is not empty. The topic must be a legal
// Kafka topic name (letters, digits, '.', '_', '-'; at most 249 bytes), the
// partition and the offset non-negative decimal numbers.
func ParseCoordinates(s, defaultTopic string) (Coordinates, error) {
	fail := func(why string) (Coordinates, error) {
		want := "TOPIC/PARTITION/OFFSET"
		if defaultTopic != "" {
			want += " or PARTITION/OFFSET"
		}
		return Coordinates{}, fmt.Errorf("malformed record coordinates %q: %s (want %s, e.g. dedup.audit/0/42)", s, why, want)
	}
	parts := strings.Split(s, "/")
	switch {
	case len(parts) == 2 && defaultTopic != "":
		parts = append([]string{defaultTopic}, parts...)
	case len(parts) != 3:
		return fail("wrong number of fields")
	}
	if err := validTopic(parts[0]); err != nil {
		return fail(err.Error())
	}
	p, err := parseNumber(parts[1], 31)
	if err != nil {
		return fail("partition " + err.Error())
	}
	o, err := parseNumber(parts[2], 63)
	if err != nil {
		return fail("offset " + err.Error())
	}
	return Coordinates{Topic: parts[0], Partition: int32(p), Offset: o}, nil
}

// parseNumber parses a non-negative decimal number below 1<<bits, digits
// only.
func parseNumber(s string, bits int) (int64, error) {
	if s == "" {
		return 0, errors.New("is empty")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a non-negative number", s)
		}
	}
	n, err := strconv.ParseInt(s, 10, bits+1)
	if err != nil {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	return n, nil
}

// validTopic refuses what cannot be a Kafka topic name.
func validTopic(t string) error {
	if t == "" || t == "." || t == ".." {
		return fmt.Errorf("topic %q is not a topic name", t)
	}
	if len(t) > 249 {
		return errors.New("topic name longer than 249 bytes")
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("topic %q holds %q, not allowed in a topic name", t, c)
		}
	}
	return nil
}
