package audit

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/producer"
)

func TestEncoder(t *testing.T) {
	text := record(`{"amount":10,"note":"<a&b>"}`, "Idempotency-Key", "k1", producer.HeaderReason, "duplicate", producer.HeaderStream, "push")
	text.Key, text.Partition, text.Offset = []byte("order-1"), 1, 7
	binary := record("", "trace", "first", "trace", "last")
	binary.Value = []byte{0xff, 0x00, 'a'}
	binary.Key = []byte{0xc3}
	absent := record("")
	absent.Value = nil
	empty := record("")
	for _, tc := range []struct {
		name string
		r    *kgo.Record
		want string
	}{
		{"text", text, `{"topic":"dedup.audit","partition":1,"offset":7,"timestamp":1741089600000,"key":"order-1","value":"{\"amount\":10,\"note\":\"<a&b>\"}","headers":{"Idempotency-Key":"k1","dedup.reason":"duplicate","dedup.stream":"push"}}`},
		{"binary, repeated header", binary, `{"topic":"dedup.audit","partition":0,"offset":0,"timestamp":1741089600000,"key_base64":"ww==","value_base64":"/wBh","headers":{"trace":"last"}}`},
		{"no key, no value", absent, `{"topic":"dedup.audit","partition":0,"offset":0,"timestamp":1741089600000,"key":null,"value":null,"headers":{}}`},
		{"empty value", empty, `{"topic":"dedup.audit","partition":0,"offset":0,"timestamp":1741089600000,"key":null,"value":"","headers":{}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := NewEncoder(&b).Encode(tc.r); err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSuffix(b.String(), "\n"); got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
			if strings.Count(b.String(), "\n") != 1 || !json.Valid(b.Bytes()) {
				t.Fatalf("not one line of JSON: %q", b.String())
			}
		})
	}
}

func TestTable(t *testing.T) {
	var b bytes.Buffer
	tb := NewTable(&b, 0, []string{"push", "orders-long-name"})
	dup := record(`{"amount":10}`, producer.HeaderReason, "duplicate", producer.HeaderStream, "push", producer.HeaderKey, "k1", producer.HeaderFirst, "push-events/0/3")
	dup.Partition, dup.Offset = 1, 12
	missing := record("line1\nline2\x1b[31m"+strings.Repeat("x", 100), producer.HeaderReason, "missing_key", producer.HeaderStream, "orders-long-name")
	dropped := record("", producer.HeaderReason, "conflict", producer.HeaderStream, "push", producer.HeaderKey, strings.Repeat("k", 40), producer.HeaderValueDropped, "2000000")
	dropped.Value = nil
	for _, r := range []*kgo.Record{dup, missing, dropped} {
		if err := tb.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	want := []string{
		"TIME                     P/OFFSET       STREAM           REASON      KEY                      FIRST                        VALUE",
		`2025-03-04T12:00:00.000Z 1/12           push             duplicate   k1                       push-events/0/3              {"amount":10}`,
		`2025-03-04T12:00:00.000Z 0/0            orders-long-name missing_key -                        -                            line1\nline2\x1b[31mxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…`,
		`2025-03-04T12:00:00.000Z 0/0            push             conflict    kkkkkkkkkkkkkkkkkkkkkkk… -                            (value of 2000000 bytes dropped)`,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines:\n%s", len(lines), b.String())
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("line %d:\ngot  %q\nwant %q", i, lines[i], want[i])
		}
	}
	// On a terminal the value column fills the width.
	b.Reset()
	tb = NewTable(&b, 140, []string{"push"})
	long := record(strings.Repeat("v", 200), producer.HeaderReason, "duplicate", producer.HeaderStream, "push")
	if err := tb.Write(long); err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n") {
		if n := len([]rune(l)); n > 140 {
			t.Errorf("line of %d runes, wider than 140: %q", n, l)
		}
	}
}

func TestPrintable(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text", "plain text"},
		{"tab\there", `tab\there`},
		{"esc\x1b[0m", `esc\x1b[0m`},
		{"bad\xffutf8", `bad\xffutf8`},
		{`back\slash`, `back\\slash`},
		{"unicode é ✓", "unicode é ✓"},
		{"nbsp\u00a0zwj\u200d", `nbsp\u00a0zwj\u200d`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := Printable([]byte(tc.in)); got != tc.want {
				t.Fatalf("Printable(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
	if got := Excerpt([]byte("ééééé"), 3); got != "éé…" {
		t.Fatalf("Excerpt = %q", got)
	}
	if got := Excerpt([]byte("abc"), 3); got != "abc" {
		t.Fatalf("Excerpt = %q", got)
	}
}
