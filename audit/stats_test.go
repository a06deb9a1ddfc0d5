package audit

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kdedup/kdedup/producer"
)

func TestStats(t *testing.T) {
	var s Stats
	add := func(stream, reason, key string, n int, at time.Time) {
		for range n {
			hs := []string{producer.HeaderReason, reason, producer.HeaderStream, stream}
			if key != "" {
				hs = append(hs, producer.HeaderKey, key)
			}
			r := record("", hs...)
			r.Timestamp = at
			s.Add(r)
		}
	}
	add("push", "duplicate", "a", 3, now)
	add("push", "duplicate", "b", 5, now.Add(time.Minute))
	add("push", "conflict", "a", 2, now)
	add("push", "missing_key", "", 1, now.Add(-time.Hour))
	add("orders", "duplicate", "a", 5, now) // same key, other stream
	add("orders", "forgotten", "z", 1, now)
	add("orders", "invalid_key", "zz", 1, now)
	s.Add(record("")) // no headers at all

	rep := s.Report(2)
	if rep.Records != 19 || rep.First != now.Add(-time.Hour).UnixMilli() || rep.Last != now.Add(time.Minute).UnixMilli() {
		t.Fatalf("records %d, first %d, last %d", rep.Records, rep.First, rep.Last)
	}
	wantCounts := []Count{
		{"-", "-", 1},
		{"orders", "duplicate", 5}, {"orders", "invalid_key", 1}, {"orders", "forgotten", 1},
		{"push", "duplicate", 8}, {"push", "conflict", 2}, {"push", "missing_key", 1},
	}
	if len(rep.Counts) != len(wantCounts) {
		t.Fatalf("counts %+v", rep.Counts)
	}
	for i := range wantCounts {
		if rep.Counts[i] != wantCounts[i] {
			t.Errorf("counts[%d] = %+v, want %+v", i, rep.Counts[i], wantCounts[i])
		}
	}
	// Ties (5 and 5) by stream, then key; only keys with duplicates; top 2.
	wantDups := []KeyCount{{"orders", "a", 5, 0}, {"push", "b", 5, 0}}
	wantConflicts := []KeyCount{{"push", "a", 3, 2}}
	for name, tc := range map[string]struct{ got, want []KeyCount }{
		"duplicates": {rep.TopDuplicates, wantDups},
		"conflicts":  {rep.TopConflicts, wantConflicts},
	} {
		if len(tc.got) != len(tc.want) {
			t.Fatalf("top %s %+v, want %+v", name, tc.got, tc.want)
		}
		for i := range tc.want {
			if tc.got[i] != tc.want[i] {
				t.Errorf("top %s[%d] = %+v, want %+v", name, i, tc.got[i], tc.want[i])
			}
		}
	}
	if got := s.Report(0); len(got.TopDuplicates) != 0 || len(got.TopConflicts) != 0 {
		t.Fatalf("top 0 lists keys: %+v", got)
	}

	var b bytes.Buffer
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"19 audit records, 2025-03-04T11:00:00.000Z to 2025-03-04T12:01:00.000Z",
		"STREAM  REASON       RECORDS",
		"push    duplicate    8",
		"push    (all)        11",
		"orders  (all)        7",
		"KEYS WITH THE MOST DUPLICATES",
		"orders  a    5           0",
		"KEYS WITH THE MOST CONFLICTS",
		"push    a    3           2",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	j, err := json.Marshal(rep)
	if err != nil || !strings.Contains(string(j), `"top_conflicts":[{"stream":"push","key":"a","duplicates":3,"conflicts":2}]`) {
		t.Fatalf("JSON %s, %v", j, err)
	}

	var empty Stats
	b.Reset()
	if err := empty.Report(10).WriteTable(&b); err != nil || b.String() != "no audit records\n" {
		t.Fatalf("empty report %q, %v", b.String(), err)
	}
	if j, _ := json.Marshal(empty.Report(10)); !strings.Contains(string(j), `"counts":[]`) {
		t.Fatalf("empty JSON %s", j)
	}
}
