package dedup

import (
	"fmt"
	"testing"

	"github.com/kdedup/kdedup/config"
)

// benchDecide decides n distinct records in a loop against a map sized for
// them, so that the state costs no allocation and the figure is the
// engine's own. After the first lap every decision is a duplicate lookup.
func benchDecide(b *testing.B, cfg config.Stream, mk func(i int) Record) {
	rules, err := Compile(cfg)
	if err != nil {
		b.Fatal(err)
	}
	const n = 1024
	recs := make([]Record, n)
	for i := range recs {
		recs[i] = mk(i)
	}
	eng := NewEngine(rules)
	st := &mapState{m: make(map[Hash]Entry, 2*n), wm: 0}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := eng.Decide(st, &recs[i%n]); err != nil {
			b.Fatal(err)
		}
	}
}

const benchBody = `{"user_id":12345,"template_id":"welcome-v2","body":"Your order has shipped and will arrive on Tuesday.","data":{"resubmitCheckKey":"%08d-key"},"tenant_id":"acme"}`

func BenchmarkDecide(b *testing.B) {
	b.Run("header", func(b *testing.B) {
		benchDecide(b, stream(nil), func(i int) Record {
			return Record{Topic: "push-events", Offset: int64(i), Timestamp: int64(i),
				Value:   fmt.Appendf(nil, benchBody, i),
				Headers: hdr("content-type", "application/json", "Idempotency-Key", fmt.Sprintf("%08d-0000-4000-8000-000000000000", i), "tenant-id", "acme")}
		})
	})
	b.Run("json", func(b *testing.B) {
		benchDecide(b, stream(func(s *config.Stream) { s.Scope = []config.ScopePart{{JSON: "tenant_id"}} }), func(i int) Record {
			return Record{Topic: "push-events", Offset: int64(i), Timestamp: int64(i), Value: fmt.Appendf(nil, benchBody, i)}
		})
	})
	b.Run("fingerprint", func(b *testing.B) {
		benchDecide(b, stream(func(s *config.Stream) {
			s.Key = []config.KeySource{{Fingerprint: &config.Fingerprint{Fields: []string{"user_id", "template_id", "body", "data"}}}}
		}), func(i int) Record {
			return Record{Topic: "push-events", Offset: int64(i), Timestamp: int64(i), Value: fmt.Appendf(nil, benchBody, i)}
		})
	})
}

// TestDecideHeaderKeyAllocs pins the requirement: deciding a record
// whose key comes from a header makes no heap allocation.
func TestDecideHeaderKeyAllocs(t *testing.T) {
	rules, err := Compile(stream(nil))
	if err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(rules)
	st := &mapState{m: make(map[Hash]Entry, 4)}
	recs := []Record{
		{Topic: "p", Value: []byte(benchBody), Headers: hdr("Idempotency-Key", "a", "tenant-id", "t")},
		{Topic: "p", Value: []byte(benchBody), Headers: hdr("Idempotency-Key", "b", "tenant-id", "t")},
	}
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := eng.Decide(st, &recs[i%2]); err != nil {
			t.Fatal(err)
		}
		i++
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per decision, want 0", allocs)
	}
}
