package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The kinds of a Difference.
const (
	// DiffEqual: the values are the same bytes.
	DiffEqual = "equal"
	// DiffJSON: both values are JSON; Lines name the differing paths.
	DiffJSON = "json"
	// DiffLines: both values are text; Lines are the differing lines.
	DiffLines = "lines"
	// DiffBytes: Lines tell where the bytes first differ.
	DiffBytes = "bytes"
)

// maxDiffLines bounds a Difference's Lines; the rest are counted in the
// last line.
const maxDiffLines = 200

// maxLineDiff bounds the line counts' product that a line diff compares
// (its cost); larger texts are compared as bytes.
const maxLineDiff = 4 << 20

// Difference is how a second value (an audit record's) differs from a
// first (the first-seen record's).
type Difference struct {
	// Kind is DiffEqual, DiffJSON, DiffLines or DiffBytes.
	Kind string `json:"kind"`
	// Lines describe the difference, one change a line:
	//   json:  "~ $.path: first → second", "- $.path: first" (only in the
	//          first), "+ $.path: second" (only in the second);
	//   lines: "- N: line" (line N of the first), "+ N: line" (line N of
	//          the second);
	//   bytes: where the values first differ, and their lengths.
	// Text is shown with control characters and invalid UTF-8 escaped.
	Lines []string `json:"lines"`
}

// Diff returns how b differs from a: field by field when both are JSON,
// line by line when both are UTF-8 text, else by bytes.
func Diff(a, b []byte) Difference {
	if bytes.Equal(a, b) {
		return Difference{Kind: DiffEqual, Lines: []string{}}
	}
	var d Difference
	if ja, ok := decodeJSON(a); ok {
		if jb, ok := decodeJSON(b); ok {
			d = Difference{Kind: DiffJSON}
			diffJSON(&d.Lines, "$", ja, jb)
			if len(d.Lines) == 0 {
				// Same JSON, written differently (spacing, member order).
				d.Lines = append(d.Lines, "(the same JSON, written differently)")
			}
			return d.capped()
		}
	}
	if utf8.Valid(a) && utf8.Valid(b) {
		la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
		if len(la)*len(lb) <= maxLineDiff {
			d = Difference{Kind: DiffLines, Lines: diffLines(la, lb)}
			return d.capped()
		}
	}
	return Difference{Kind: DiffBytes, Lines: diffBytes(a, b)}
}

func (d Difference) capped() Difference {
	if len(d.Lines) > maxDiffLines {
		n := len(d.Lines) - maxDiffLines
		d.Lines = append(d.Lines[:maxDiffLines:maxDiffLines], fmt.Sprintf("… and %d more", n))
	}
	return d
}

// decodeJSON decodes b as one JSON value, numbers kept as written.
func decodeJSON(b []byte) (any, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, false
	}
	if _, err := dec.Token(); err == nil {
		return nil, false // more than one value
	}
	return v, true
}

// diffJSON appends the differences of b from a at path.
func diffJSON(out *[]string, path string, a, b any) {
	switch ta := a.(type) {
	case map[string]any:
		if tb, ok := b.(map[string]any); ok {
			keys := make([]string, 0, len(ta)+len(tb))
			for k := range ta {
				keys = append(keys, k)
			}
			for k := range tb {
				if _, ok := ta[k]; !ok {
					keys = append(keys, k)
				}
			}
			slices.Sort(keys)
			for _, k := range keys {
				va, ina := ta[k]
				vb, inb := tb[k]
				p := path + member(k)
				switch {
				case !inb:
					*out = append(*out, "- "+p+": "+compact(va))
				case !ina:
					*out = append(*out, "+ "+p+": "+compact(vb))
				default:
					diffJSON(out, p, va, vb)
				}
			}
			return
		}
	case []any:
		if tb, ok := b.([]any); ok {
			for i := range max(len(ta), len(tb)) {
				p := path + "[" + strconv.Itoa(i) + "]"
				switch {
				case i >= len(tb):
					*out = append(*out, "- "+p+": "+compact(ta[i]))
				case i >= len(ta):
					*out = append(*out, "+ "+p+": "+compact(tb[i]))
				default:
					diffJSON(out, p, ta[i], tb[i])
				}
			}
			return
		}
	}
	if ca, cb := compact(a), compact(b); ca != cb {
		*out = append(*out, "~ "+path+": "+ca+" → "+cb)
	}
}

// member is the path step to member k: .k for a plain name, ["k"] else.
func member(k string) string {
	plain := k != ""
	for i, r := range k {
		if !(r == '_' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || i > 0 && '0' <= r && r <= '9') {
			plain = false
			break
		}
	}
	if plain {
		return "." + k
	}
	q, _ := marshal(k)
	return "[" + Printable(bytes.TrimSuffix(q, []byte("\n"))) + "]"
}

// compact is v as compact JSON, printable, cut at 120 characters.
func compact(v any) string {
	b, err := marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return Excerpt(bytes.TrimSuffix(b, []byte("\n")), 120)
}

// diffLines returns the lines of a not in b and of b not in a, by a
// longest common subsequence, in order.
func diffLines(a, b []string) []string {
	// lcs[i][j] is the LCS length of a[i:] and b[j:].
	lcs := make([][]int32, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int32, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []string
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			i, j = i+1, j+1
		case j == len(b) || i < len(a) && lcs[i+1][j] >= lcs[i][j+1]:
			out = append(out, fmt.Sprintf("- %d: %s", i+1, Excerpt([]byte(a[i]), 200)))
			i++
		default:
			out = append(out, fmt.Sprintf("+ %d: %s", j+1, Excerpt([]byte(b[j]), 200)))
			j++
		}
	}
	return out
}

// diffBytes tells where a and b first differ.
func diffBytes(a, b []byte) []string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	window := func(v []byte) string {
		if i >= len(v) {
			return "(end)"
		}
		return fmt.Sprintf("% x", v[i:min(i+16, len(v))])
	}
	return []string{
		fmt.Sprintf("first difference at byte %d (first: %d bytes, second: %d bytes)", i, len(a), len(b)),
		"first:  " + window(a),
		"second: " + window(b),
	}
}
