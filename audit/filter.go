package audit

import (
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/dedup"
	"github.com/kdedup/kdedup/producer"
)

// ReasonForgotten is the dedup.reason of the audit record an admin forget
// of a key writes: an empty value, headers dedup.reason, dedup.stream,
// dedup.key and dedup.first, and no dedup.source.
const ReasonForgotten = producer.ReasonForgotten

// Reasons returns, in a fixed order, every dedup.reason an audit record
// may carry: the decisions other than first_seen, then the refusals of a
// first-seen record (too_large, refused), then forgotten.
func Reasons() []string {
	var rs []string
	for _, r := range dedup.Reasons() {
		if r != dedup.FirstSeen {
			rs = append(rs, r.String())
		}
	}
	return append(rs, producer.ReasonTooLarge, producer.ReasonRefused, ReasonForgotten)
}

// Header returns the value of r's header name, its last one when it is
// repeated; ok is false when r has none.
func Header(r *kgo.Record, name string) (value []byte, ok bool) {
	for i := len(r.Headers) - 1; i >= 0; i-- {
		if r.Headers[i].Key == name {
			return r.Headers[i].Value, true
		}
	}
	return nil, false
}

// header is Header as a string, "" when absent.
func header(r *kgo.Record, name string) string {
	v, _ := Header(r, name)
	return string(v)
}

// Filter selects audit records by their headers. An empty field matches
// every record; set fields must all match. The zero Filter matches every
// record.
type Filter struct {
	// Stream matches dedup.stream. Default: "", any stream.
	Stream string
	// Reason matches dedup.reason. Default: "", any reason.
	Reason string
	// Key matches dedup.key exactly (a record without one never matches).
	// Default: "", any key.
	Key string
}

// NewFilter returns the Filter of the given stream, reason and key,
// refusing a stream that is not among streams (the configured stream
// names) and a reason that is not among Reasons. Empty values match all.
func NewFilter(streams []string, stream, reason, key string) (Filter, error) {
	if stream != "" && !slices.Contains(streams, stream) {
		return Filter{}, fmt.Errorf("unknown stream %q (configured streams: %s)", stream, strings.Join(streams, ", "))
	}
	if reason != "" && !slices.Contains(Reasons(), reason) {
		return Filter{}, fmt.Errorf("unknown reason %q (reasons: %s)", reason, strings.Join(Reasons(), ", "))
	}
	return Filter{Stream: stream, Reason: reason, Key: key}, nil
}

// Match reports whether r passes the filter.
func (f Filter) Match(r *kgo.Record) bool {
	return matches(r, producer.HeaderStream, f.Stream) &&
		matches(r, producer.HeaderReason, f.Reason) &&
		matches(r, producer.HeaderKey, f.Key)
}

func matches(r *kgo.Record, name, want string) bool {
	if want == "" {
		return true
	}
	v, ok := Header(r, name)
	return ok && string(v) == want
}
