package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/producer"
)

// ErrNotAudit is wrapped by Show when the record has no dedup.reason
// header: it is not an audit record.
var ErrNotAudit = errors.New("not an audit record (no " + producer.HeaderReason + " header)")

// Shown is an audit record beside the first-seen record its dedup.first
// header names.
type Shown struct {
	// Audit is the audit record.
	Audit *kgo.Record
	// First locates the first-seen input record: the dedup.first header.
	// Nil when the record has none (reasons other than duplicate, conflict
	// and forgotten).
	First *Coordinates
	// FirstRecord is the first-seen record; nil when First is nil or the
	// record could not be read (FirstErr says why).
	FirstRecord *kgo.Record
	// FirstErr is why FirstRecord is nil though First is set: ErrGone
	// (retention removed it), ErrNotFound, a malformed dedup.first header,
	// or a failure to read.
	FirstErr error
	// Diff is how the audit record's value differs from the first-seen
	// record's; nil unless both were read and the audit record carries its
	// value (not forgotten, no dedup.value_dropped).
	Diff *Difference
}

// Show reads the audit record at c and the first-seen record it names. It
// fails when the audit record cannot be read or is no audit record; a
// first-seen record that cannot be read is reported in FirstErr.
func (s *Source) Show(ctx context.Context, c Coordinates) (*Shown, error) {
	r, err := s.Record(ctx, c)
	if err != nil {
		return nil, err
	}
	if _, ok := Header(r, producer.HeaderReason); !ok {
		return nil, fmt.Errorf("%s: %w", c, ErrNotAudit)
	}
	sh := &Shown{Audit: r}
	first, ok := Header(r, producer.HeaderFirst)
	if !ok {
		return sh, nil
	}
	fc, err := ParseCoordinates(string(first), "")
	if err != nil {
		sh.FirstErr = fmt.Errorf("header %s: %w", producer.HeaderFirst, err)
		return sh, nil
	}
	sh.First = &fc
	fr, err := s.Record(ctx, fc)
	if err != nil {
		sh.FirstErr = err
		return sh, nil
	}
	sh.FirstRecord = fr
	_, dropped := Header(r, producer.HeaderValueDropped)
	if header(r, producer.HeaderReason) != ReasonForgotten && !dropped {
		d := Diff(fr.Value, r.Value)
		sh.Diff = &d
	}
	return sh, nil
}

// WriteText writes sh for reading: the audit record (time, coordinates,
// every header, the value), the first-seen record, and the difference of
// their values.
func (sh *Shown) WriteText(w io.Writer) error {
	var b strings.Builder
	r := sh.Audit
	fmt.Fprintf(&b, "audit record %s/%d/%d\n", r.Topic, r.Partition, r.Offset)
	writeRecord(&b, r)
	switch {
	case sh.First == nil && sh.FirstErr != nil:
		fmt.Fprintf(&b, "\nfirst-seen record: unknown: %v\n", sh.FirstErr)
	case sh.First == nil:
		fmt.Fprintf(&b, "\nfirst-seen record: none (reason %s names none)\n", Printable([]byte(header(r, producer.HeaderReason))))
	case sh.FirstErr != nil:
		fmt.Fprintf(&b, "\nfirst-seen record %s: cannot be shown: %v\n", sh.First, sh.FirstErr)
		if errors.Is(sh.FirstErr, ErrGone) {
			fmt.Fprintf(&b, "  (the input topic no longer holds it; the output topic of stream %s may still hold its copy)\n",
				Printable([]byte(header(r, producer.HeaderStream))))
		}
	default:
		fmt.Fprintf(&b, "\nfirst-seen record %s\n", sh.First)
		writeRecord(&b, sh.FirstRecord)
	}
	switch {
	case sh.Diff == nil:
	case sh.Diff.Kind == DiffEqual:
		b.WriteString("\nvalues: identical\n")
	default:
		fmt.Fprintf(&b, "\nvalues differ (%s diff: first-seen → audit record):\n", sh.Diff.Kind)
		for _, l := range sh.Diff.Lines {
			b.WriteString("  " + l + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeRecord writes r's time, key, headers and value, indented.
func writeRecord(b *strings.Builder, r *kgo.Record) {
	fmt.Fprintf(b, "  time     %s (%d)\n", r.Timestamp.UTC().Format(TimeLayout), r.Timestamp.UnixMilli())
	if r.Key == nil {
		b.WriteString("  key      (none)\n")
	} else {
		fmt.Fprintf(b, "  key      %s\n", Printable(r.Key))
	}
	if len(r.Headers) > 0 {
		b.WriteString("  headers\n")
		width := 0
		for _, h := range r.Headers {
			width = max(width, utf8.RuneCountInString(h.Key))
		}
		for _, h := range r.Headers {
			v := Printable(h.Value)
			if h.Key == producer.HeaderFirstTS {
				if ms, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil {
					v += " (" + millis(ms) + ")"
				}
			}
			fmt.Fprintf(b, "    %-*s  %s\n", width, Printable([]byte(h.Key)), v)
		}
	}
	switch {
	case r.Value == nil:
		b.WriteString("  value    (none)\n")
	case !utf8.Valid(r.Value):
		fmt.Fprintf(b, "  value    (%d bytes, not UTF-8) %s\n", len(r.Value), Excerpt(r.Value, 400))
	default:
		fmt.Fprintf(b, "  value    %s\n", Excerpt(r.Value, 2000))
	}
}

// shownJSON is the JSON form of a Shown.
type shownJSON struct {
	Audit       jsonRecord  `json:"audit"`
	First       *string     `json:"first"`
	FirstRecord *jsonRecord `json:"first_record"`
	FirstError  string      `json:"first_error,omitempty"`
	Diff        *Difference `json:"diff"`
}

// WriteJSON writes sh as one JSON object: audit (the record, in Encoder's
// form), first (the dedup.first coordinates, or null), first_record (or
// null), first_error (why first_record is null though first is set) and
// diff (kind and lines, or null).
func (sh *Shown) WriteJSON(w io.Writer) error {
	j := shownJSON{Audit: jsonOf(sh.Audit), Diff: sh.Diff}
	if sh.First != nil {
		s := sh.First.String()
		j.First = &s
	}
	if sh.FirstRecord != nil {
		fr := jsonOf(sh.FirstRecord)
		j.FirstRecord = &fr
	}
	if sh.FirstErr != nil {
		j.FirstError = sh.FirstErr.Error()
	}
	b, err := marshal(j)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
