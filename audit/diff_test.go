package audit

import (
	"strings"
	"testing"
)

func TestDiff(t *testing.T) {
	for _, tc := range []struct {
		name, a, b string
		kind       string
		want       []string
	}{
		{name: "equal", a: `{"a":1}`, b: `{"a":1}`, kind: DiffEqual, want: []string{}},
		{name: "json changed, removed, added", a: `{"amount":10,"note":"x","items":[{"sku":"a"},{"sku":"b"}]}`, b: `{"amount":12,"coupon":"y","items":[{"sku":"a"},{"sku":"c"},3]}`, kind: DiffJSON, want: []string{
			"~ $.amount: 10 → 12",
			`+ $.coupon: "y"`,
			`~ $.items[1].sku: "b" → "c"`,
			"+ $.items[2]: 3",
			`- $.note: "x"`,
		}},
		{name: "json type change", a: `{"a":{"b":1}}`, b: `{"a":[1]}`, kind: DiffJSON, want: []string{`~ $.a: {"b":1} → [1]`}},
		{name: "json odd member names", a: `{"a b":1,"":2,"x\n":3}`, b: `{"a b":2,"":3,"x\n":4}`, kind: DiffJSON, want: []string{
			`~ $[""]: 2 → 3`, `~ $["a b"]: 1 → 2`, `~ $["x\\n"]: 3 → 4`,
		}},
		{name: "json numbers as written", a: `{"n":1.0}`, b: `{"n":1}`, kind: DiffJSON, want: []string{"~ $.n: 1.0 → 1"}},
		{name: "json scalars", a: `"a"`, b: `"b"`, kind: DiffJSON, want: []string{`~ $: "a" → "b"`}},
		{name: "json written differently", a: `{"a":1,"b":2}`, b: `{ "b": 2, "a": 1 }`, kind: DiffJSON, want: []string{"(the same JSON, written differently)"}},
		{name: "two JSON values are text", a: `{"a":1} {}`, b: `{"a":1}`, kind: DiffLines, want: []string{`- 1: {"a":1} {}`, `+ 1: {"a":1}`}},
		{name: "lines", a: "one\ntwo\nthree\nfour", b: "one\n2\nthree\nfour\nfive", kind: DiffLines, want: []string{"- 2: two", "+ 2: 2", "+ 5: five"}},
		{name: "text against JSON", a: "plain", b: `{"a":1}`, kind: DiffLines, want: []string{"- 1: plain", `+ 1: {"a":1}`}},
		{name: "bytes", a: "\xff\x00abc", b: "\xff\x00abd\x01", kind: DiffBytes, want: []string{
			"first difference at byte 4 (first: 5 bytes, second: 6 bytes)", "first:  63", "second: 64 01",
		}},
		{name: "bytes, a prefix", a: "\xff", b: "\xff\x01", kind: DiffBytes, want: []string{
			"first difference at byte 1 (first: 1 bytes, second: 2 bytes)", "first:  (end)", "second: 01",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Diff([]byte(tc.a), []byte(tc.b))
			if d.Kind != tc.kind || strings.Join(d.Lines, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("Diff = %s\n%s\nwant %s\n%s", d.Kind, strings.Join(d.Lines, "\n"), tc.kind, strings.Join(tc.want, "\n"))
			}
		})
	}
	// Many changes are capped.
	var a, b strings.Builder
	for range 300 {
		a.WriteString("a\n")
		b.WriteString("b\n")
	}
	d := Diff([]byte(a.String()), []byte(b.String()))
	if len(d.Lines) != maxDiffLines+1 || d.Lines[maxDiffLines] != "… and 400 more" {
		t.Fatalf("%d lines, last %q", len(d.Lines), d.Lines[len(d.Lines)-1])
	}
}
