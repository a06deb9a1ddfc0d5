package audit

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/dedup"
	"github.com/kdedup/kdedup/producer"
)

// DefaultTop is how many keys a stats report lists per ranking.
const DefaultTop = 10

// Stats counts audit records per stream and reason, and per key the
// duplicates and conflicts. It keeps one entry per distinct key that had
// a duplicate or a conflict. The zero Stats is ready to use.
type Stats struct {
	records      int
	first, last  int64 // record timestamps, Unix ms
	counts       map[streamReason]int
	keys         map[streamKey]*KeyCount
	dupName      string
	conflictName string
}

type streamReason struct{ stream, reason string }

type streamKey struct{ stream, key string }

// Count is the number of audit records of one stream and reason.
type Count struct {
	Stream  string `json:"stream"`
	Reason  string `json:"reason"`
	Records int    `json:"records"`
}

// KeyCount is the duplicates and conflicts of one key of a stream.
type KeyCount struct {
	Stream     string `json:"stream"`
	Key        string `json:"key"`
	Duplicates int    `json:"duplicates"`
	Conflicts  int    `json:"conflicts"`
}

// Add counts r. A record without a dedup.stream or dedup.reason header
// counts under "-".
func (s *Stats) Add(r *kgo.Record) {
	if s.counts == nil {
		s.counts = make(map[streamReason]int)
		s.keys = make(map[streamKey]*KeyCount)
		s.dupName, s.conflictName = dedup.Duplicate.String(), dedup.Conflict.String()
	}
	ts := r.Timestamp.UnixMilli()
	if s.records == 0 || ts < s.first {
		s.first = ts
	}
	if s.records == 0 || ts > s.last {
		s.last = ts
	}
	s.records++
	stream, reason := orDash(r, producer.HeaderStream), orDash(r, producer.HeaderReason)
	s.counts[streamReason{stream, reason}]++
	if reason != s.dupName && reason != s.conflictName {
		return
	}
	key, ok := Header(r, producer.HeaderKey)
	if !ok {
		return
	}
	k := streamKey{stream, string(key)}
	kc := s.keys[k]
	if kc == nil {
		kc = &KeyCount{Stream: k.stream, Key: k.key}
		s.keys[k] = kc
	}
	if reason == s.dupName {
		kc.Duplicates++
	} else {
		kc.Conflicts++
	}
}

func orDash(r *kgo.Record, name string) string {
	if v, ok := Header(r, name); ok && len(v) > 0 {
		return string(v)
	}
	return "-"
}

// Report is what Stats counted.
type Report struct {
	// Records is the number of audit records counted.
	Records int `json:"records"`
	// First and Last are the oldest and newest record timestamps, Unix
	// milliseconds; 0 without records.
	First int64 `json:"first_timestamp"`
	Last  int64 `json:"last_timestamp"`
	// Counts are per stream and reason, by stream, then in Reasons order
	// (unknown reasons last, by name).
	Counts []Count `json:"counts"`
	// TopDuplicates are the keys with the most duplicates, most first
	// (ties by stream and key); TopConflicts likewise for conflicts.
	TopDuplicates []KeyCount `json:"top_duplicates"`
	TopConflicts  []KeyCount `json:"top_conflicts"`
}

// Report returns the counts, with the top keys of each ranking (top <= 0:
// none).
func (s *Stats) Report(top int) Report {
	rep := Report{Records: s.records, First: s.first, Last: s.last, Counts: []Count{}, TopDuplicates: []KeyCount{}, TopConflicts: []KeyCount{}}
	order := Reasons()
	rank := func(reason string) int {
		if i := slices.Index(order, reason); i >= 0 {
			return i
		}
		return len(order)
	}
	for k, n := range s.counts {
		rep.Counts = append(rep.Counts, Count{Stream: k.stream, Reason: k.reason, Records: n})
	}
	slices.SortFunc(rep.Counts, func(a, b Count) int {
		return cmp.Or(cmp.Compare(a.Stream, b.Stream), cmp.Compare(rank(a.Reason), rank(b.Reason)), cmp.Compare(a.Reason, b.Reason))
	})
	keys := make([]KeyCount, 0, len(s.keys))
	for _, kc := range s.keys {
		keys = append(keys, *kc)
	}
	topBy := func(n func(KeyCount) int) []KeyCount {
		slices.SortFunc(keys, func(a, b KeyCount) int {
			return cmp.Or(cmp.Compare(n(b), n(a)), cmp.Compare(a.Stream, b.Stream), cmp.Compare(a.Key, b.Key))
		})
		out := []KeyCount{}
		for _, kc := range keys {
			if len(out) >= top || n(kc) == 0 {
				break
			}
			out = append(out, kc)
		}
		return out
	}
	rep.TopDuplicates = topBy(func(k KeyCount) int { return k.Duplicates })
	rep.TopConflicts = topBy(func(k KeyCount) int { return k.Conflicts })
	return rep
}

// WriteTable writes the report as aligned tables: the counts per stream
// and reason, with a total per stream, then the top keys.
func (rep Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if rep.Records == 0 {
		fmt.Fprintln(tw, "no audit records")
		return tw.Flush()
	}
	fmt.Fprintf(tw, "%d audit records, %s to %s\n\n", rep.Records, millis(rep.First), millis(rep.Last))
	fmt.Fprintln(tw, "STREAM\tREASON\tRECORDS")
	for i, c := range rep.Counts {
		fmt.Fprintf(tw, "%s\t%s\t%d\n", Printable([]byte(c.Stream)), Printable([]byte(c.Reason)), c.Records)
		if i == len(rep.Counts)-1 || rep.Counts[i+1].Stream != c.Stream {
			total := 0
			for _, d := range rep.Counts {
				if d.Stream == c.Stream {
					total += d.Records
				}
			}
			fmt.Fprintf(tw, "%s\t(all)\t%d\n", Printable([]byte(c.Stream)), total)
		}
	}
	keys := func(title string, kcs []KeyCount) {
		fmt.Fprintf(tw, "\n%s\n", title)
		if len(kcs) == 0 {
			fmt.Fprintln(tw, "  (none)")
			return
		}
		fmt.Fprintln(tw, "STREAM\tKEY\tDUPLICATES\tCONFLICTS")
		for _, kc := range kcs {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", Printable([]byte(kc.Stream)), Excerpt([]byte(kc.Key), 64), kc.Duplicates, kc.Conflicts)
		}
	}
	keys("KEYS WITH THE MOST DUPLICATES", rep.TopDuplicates)
	keys("KEYS WITH THE MOST CONFLICTS", rep.TopConflicts)
	return tw.Flush()
}
