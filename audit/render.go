package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/producer"
)

// jsonRecord is the JSON form of a record; see Encoder.
type jsonRecord struct {
	Topic       string            `json:"topic"`
	Partition   int32             `json:"partition"`
	Offset      int64             `json:"offset"`
	Timestamp   int64             `json:"timestamp"`
	Key         json.RawMessage   `json:"key,omitempty"`
	KeyBase64   []byte            `json:"key_base64,omitempty"`
	Value       json.RawMessage   `json:"value,omitempty"`
	ValueBase64 []byte            `json:"value_base64,omitempty"`
	Headers     map[string]string `json:"headers"`
}

// Encoder writes records as JSON, one object a line: topic, partition,
// offset, timestamp (Unix milliseconds), key and value (as text when
// valid UTF-8, null when absent; otherwise key_base64 and value_base64 in
// their place) and headers, every header as a member (a repeated header's
// last value; a value that is not UTF-8 has its bad bytes replaced by
// U+FFFD).
type Encoder struct {
	w io.Writer
}

// NewEncoder returns an Encoder writing to w.
func NewEncoder(w io.Writer) *Encoder { return &Encoder{w: w} }

// Encode writes r.
func (e *Encoder) Encode(r *kgo.Record) error {
	b, err := marshal(jsonOf(r))
	if err != nil {
		return err
	}
	_, err = e.w.Write(b)
	return err
}

func jsonOf(r *kgo.Record) jsonRecord {
	j := jsonRecord{
		Topic:     r.Topic,
		Partition: r.Partition,
		Offset:    r.Offset,
		Timestamp: r.Timestamp.UnixMilli(),
		Headers:   make(map[string]string, len(r.Headers)),
	}
	j.Key, j.KeyBase64 = textOrBytes(r.Key)
	j.Value, j.ValueBase64 = textOrBytes(r.Value)
	for _, h := range r.Headers {
		j.Headers[h.Key] = string(h.Value)
	}
	return j
}

// textOrBytes returns b as a JSON string when it is valid UTF-8 (null when
// nil), else as bytes for base64.
func textOrBytes(b []byte) (json.RawMessage, []byte) {
	if b == nil {
		return json.RawMessage("null"), nil
	}
	if !utf8.Valid(b) {
		return nil, b
	}
	q, _ := marshal(string(b))
	return bytes.TrimSuffix(q, []byte("\n")), nil
}

// marshal is json.Marshal without HTML escaping, ending in a newline.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// TimeLayout is how tables show times: UTC, milliseconds.
const TimeLayout = "2006-01-02T15:04:05.000Z"

// Widths of the Table's fixed columns; longer texts are cut with "…".
const (
	streamWidth = 16
	keyWidth    = 24
	firstWidth  = 28
	// excerptWidth is the value column's width when the table's width is
	// unknown (not a terminal).
	excerptWidth = 60
	// minExcerpt is the value column's narrowest width.
	minExcerpt = 16
)

// Table writes records as an aligned table with one line each: time,
// partition/offset, stream, reason, key, first (dedup.first) and an
// excerpt of the value. Its columns have fixed widths, so that lines can
// be written as records arrive; texts are shown with control characters
// and invalid UTF-8 escaped.
type Table struct {
	w       io.Writer
	header  bool
	stream  int
	excerpt int
}

// NewTable returns a Table writing to w, width columns wide (0: unknown,
// the value excerpt is then 60 characters), with a stream column as wide
// as the longest of streams (the configured stream names), at most 16.
func NewTable(w io.Writer, width int, streams []string) *Table {
	t := &Table{w: w, stream: len("STREAM")}
	for _, s := range streams {
		t.stream = max(t.stream, utf8.RuneCountInString(s))
	}
	t.stream = min(t.stream, streamWidth)
	t.excerpt = excerptWidth
	if width > 0 {
		used := len(TimeLayout) + 1 + 14 + 1 + t.stream + 1 + 11 + 1 + keyWidth + 1 + firstWidth + 1
		t.excerpt = max(width-used, minExcerpt)
	}
	return t
}

// Write writes r's line, after the header line on the first call.
func (t *Table) Write(r *kgo.Record) error {
	var b strings.Builder
	if !t.header {
		t.header = true
		t.row(&b, "TIME", "P/OFFSET", "STREAM", "REASON", "KEY", "FIRST", "VALUE")
	}
	value := Excerpt(r.Value, t.excerpt)
	if n, ok := Header(r, producer.HeaderValueDropped); ok {
		// The audit topic refused the value as too large.
		value = Excerpt([]byte("(value of "+string(n)+" bytes dropped)"), t.excerpt)
	}
	t.row(&b,
		r.Timestamp.UTC().Format(TimeLayout),
		strconv.FormatInt(int64(r.Partition), 10)+"/"+strconv.FormatInt(r.Offset, 10),
		Excerpt([]byte(header(r, producer.HeaderStream)), t.stream),
		header(r, producer.HeaderReason),
		excerptOr(r, producer.HeaderKey, keyWidth),
		excerptOr(r, producer.HeaderFirst, firstWidth),
		value)
	_, err := io.WriteString(t.w, b.String())
	return err
}

func excerptOr(r *kgo.Record, name string, width int) string {
	v, ok := Header(r, name)
	if !ok {
		return "-"
	}
	return Excerpt(v, width)
}

func (t *Table) row(b *strings.Builder, time, at, stream, reason, key, first, value string) {
	pad(b, time, len(TimeLayout))
	pad(b, at, 14)
	pad(b, stream, t.stream)
	pad(b, reason, 11)
	pad(b, key, keyWidth)
	pad(b, first, firstWidth)
	b.WriteString(value)
	b.WriteByte('\n')
}

// pad writes s and spaces up to width runes, then one more.
func pad(b *strings.Builder, s string, width int) {
	b.WriteString(s)
	for n := utf8.RuneCountInString(s); n < width; n++ {
		b.WriteByte(' ')
	}
	b.WriteByte(' ')
}

// Excerpt returns b as printable text of at most width runes: control
// characters and invalid UTF-8 escaped as in Go string literals, and a
// longer text cut, ending in "…". width <= 0 means no limit.
func Excerpt(b []byte, width int) string {
	s := Printable(b)
	if width <= 0 || utf8.RuneCountInString(s) <= width {
		return s
	}
	rs := []rune(s)
	return string(rs[:max(width-1, 0)]) + "…"
}

// Printable returns b with everything that is not a printable character
// (control characters, invalid UTF-8) escaped as in a Go string literal,
// so that a value cannot garble a terminal.
func Printable(b []byte) string {
	var s strings.Builder
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&s, `\x%02x`, b[0])
		case r == '\\':
			s.WriteString(`\\`)
		case unicode.IsPrint(r) || r == ' ':
			s.Write(b[:n])
		default:
			q := strconv.QuoteRune(r)
			s.WriteString(q[1 : len(q)-1])
		}
		b = b[n:]
	}
	return s.String()
}

// millis formats Unix milliseconds as a table time.
func millis(ms int64) string {
	return time.UnixMilli(ms).UTC().Format(TimeLayout)
}
