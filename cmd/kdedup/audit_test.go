package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/dedup"
	"github.com/kdedup/kdedup/producer"
)

// TestAuditCommands runs kdedup audit tail, stats and show through run
// against kfake: audit records of committed transactions are shown, those
// of an aborted one never, and no consumer group is created.
func TestAuditCommands(t *testing.T) {
	c := kfake.MustCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "push-events", "orders-events", "dedup.audit"))
	defer c.Close()
	root := t.TempDir()
	cfg := filepath.Join(root, "kdedup.yaml")
	yaml := "brokers: [" + c.ListenAddrs()[0] + "]\nstate_dir: " + root + "\nstreams:\n" +
		"  - name: push\n    input: push-events\n    ttl: 1h\n    key: [{header: Idempotency-Key}]\n" +
		"  - name: orders\n    input: orders-events\n    ttl: 1h\n    key: [{header: Idempotency-Key}]\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	seeds := kgo.SeedBrokers(c.ListenAddrs()...)
	plain, err := kgo.NewClient(seeds, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	txn, err := kgo.NewClient(seeds, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionalID("kdedup-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()

	now := time.Now()
	input := func(topic string, p int32, value string, ts time.Time) *kgo.Record {
		r := &kgo.Record{Topic: topic, Partition: p, Key: []byte("order-7"), Value: []byte(value), Timestamp: ts}
		if err := plain.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		return r
	}
	seen := func(reason dedup.Reason, key string, first *kgo.Record) *dedup.Decision {
		return &dedup.Decision{Reason: reason, Key: []byte(key), Entry: dedup.Entry{Topic: first.Topic, Partition: first.Partition, Offset: first.Offset, FirstSeen: first.Timestamp.UnixMilli()}}
	}
	transaction := func(commit bool, rs ...*kgo.Record) {
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := txn.ProduceSync(ctx, rs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	old := now.Add(-2 * time.Hour)
	first := input("push-events", 0, `{"amount":10,"currency":"EUR"}`, now.Add(-5*time.Minute))
	oldFirst := input("orders-events", 1, `{"sku":"a"}`, old)
	dupIn := input("push-events", 0, `{"amount":10,"currency":"EUR"}`, now.Add(-4*time.Minute))
	conflictIn := input("push-events", 0, `{"amount":12,"currency":"EUR"}`, now.Add(-3*time.Minute))
	oldDupIn := input("orders-events", 1, `{"sku":"a"}`, old.Add(time.Minute))
	binIn := input("push-events", 0, "\xff\x01binary", now.Add(-2*time.Minute))
	ghostIn := input("push-events", 0, `{"ghost":1}`, now.Add(-time.Minute))
	dup := producer.Audit(dupIn, "dedup.audit", 2, "push", seen(dedup.Duplicate, "k1", first))
	conflict := producer.Audit(conflictIn, "dedup.audit", 2, "push", seen(dedup.Conflict, "k1", first))
	oldDup := producer.Audit(oldDupIn, "dedup.audit", 2, "orders", seen(dedup.Duplicate, "o1", oldFirst))
	bin := producer.Audit(binIn, "dedup.audit", 2, "push", seen(dedup.Duplicate, "k2", first))
	transaction(true, dup, conflict, oldDup, bin)
	transaction(false, producer.Audit(ghostIn, "dedup.audit", 2, "push", seen(dedup.Conflict, "ghost", first)))

	cmd := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(args, nil, &out, &errb)
		return code, out.String(), errb.String()
	}

	t.Run("tail json", func(t *testing.T) {
		code, out, errs := cmd("audit", "tail", "--config", cfg, "--from-beginning", "-o", "json")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		t.Logf("kdedup audit tail --from-beginning -o json:\n%s", out)
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 4 || strings.Contains(out, "ghost") {
			t.Fatalf("want 4 records, no ghost:\n%s", out)
		}
		var recs []map[string]any
		for _, l := range lines {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("%v: %s", err, l)
			}
			recs = append(recs, m)
		}
		// Partition by partition in offset order; partitions interleave in
		// no particular order (docs/audit.md), so the checks below look at
		// the records sorted by partition: 0 (push: duplicate, conflict,
		// binary), then 1.
		inOffsetOrder(t, len(recs), func(i int) (int, int) {
			return int(recs[i]["partition"].(float64)), int(recs[i]["offset"].(float64))
		})
		slices.SortStableFunc(recs, func(a, b map[string]any) int {
			return cmp.Compare(a["partition"].(float64), b["partition"].(float64))
		})
		r := recs[0]
		hs, _ := r["headers"].(map[string]any)
		if r["topic"] != "dedup.audit" || r["partition"] != 0.0 || r["offset"] != 0.0 || r["key"] != "order-7" ||
			r["value"] != `{"amount":10,"currency":"EUR"}` || r["timestamp"] != float64(dupIn.Timestamp.UnixMilli()) ||
			hs["dedup.reason"] != "duplicate" || hs["dedup.key"] != "k1" || hs["dedup.first"] != "push-events/0/0" ||
			hs["dedup.first_ts"] != strconv.FormatInt(first.Timestamp.UnixMilli(), 10) {
			t.Errorf("record %v", r)
		}
		if b := recs[2]; b["value_base64"] != "/wFiaW5hcnk=" || b["value"] != nil {
			t.Errorf("binary record %v", b)
		}
		if o := recs[3]; o["partition"] != 1.0 {
			t.Errorf("last record %v", o)
		}
	})
	for _, tc := range []struct {
		name  string
		args  []string
		keys  []string // dedup.key of the records shown, in order
		total int      // records read
	}{
		{"default: the last hour", nil, []string{"k1", "k1", "k2"}, 3},
		{"since 3h", []string{"--since", "3h"}, []string{"k1", "k1", "k2", "o1"}, 4},
		{"stream", []string{"--from-beginning", "--stream", "orders"}, []string{"o1"}, 4},
		{"reason", []string{"--since", "1h", "--reason", "conflict"}, []string{"k1"}, 3},
		{"key", []string{"--from-beginning", "--key", "k2"}, []string{"k2"}, 4},
		{"nothing", []string{"--from-beginning", "--reason", "malformed"}, nil, 4},
	} {
		t.Run("tail table "+tc.name, func(t *testing.T) {
			code, out, errs := cmd(append([]string{"audit", "tail", "--config", cfg}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(tc.keys) == 0 {
				if out != "" {
					t.Fatalf("output %q", out)
				}
			} else if !strings.HasPrefix(lines[0], "TIME ") || len(lines) != len(tc.keys)+1 {
				t.Fatalf("output:\n%s", out)
			}
			// By partition, as in the json check: the second column is
			// partition/offset.
			rows := lines[1:]
			at := func(row string) (int, int) {
				var part, off int
				if f := strings.Fields(row); len(f) > 1 {
					fmt.Sscanf(f[1], "%d/%d", &part, &off)
				}
				return part, off
			}
			inOffsetOrder(t, len(rows), func(i int) (int, int) { return at(rows[i]) })
			slices.SortStableFunc(rows, func(a, b string) int { // rows is lines[1:]: sorts lines
				pa, _ := at(a)
				pb, _ := at(b)
				return cmp.Compare(pa, pb)
			})
			for i, k := range tc.keys {
				if f := strings.Fields(lines[i+1]); len(f) < 5 || f[4] != k {
					t.Errorf("line %d: %q, want key %s", i+1, lines[i+1], k)
				}
			}
			if want := strconv.Itoa(len(tc.keys)) + " of " + strconv.Itoa(tc.total) + " audit records shown\n"; errs != want {
				t.Errorf("stderr %q, want %q", errs, want)
			}
		})
	}
	t.Run("stats", func(t *testing.T) {
		code, out, errs := cmd("audit", "stats", "--config", cfg, "--from-beginning")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		t.Logf("kdedup audit stats --from-beginning:\n%s", out)
		for _, want := range []string{"4 audit records, ", "orders  duplicate  1", "push    duplicate  2", "push    conflict   1", "push    (all)      3",
			"KEYS WITH THE MOST DUPLICATES", "push    k1   1           1", "KEYS WITH THE MOST CONFLICTS"} {
			if !strings.Contains(out, want) {
				t.Errorf("lacks %q", want)
			}
		}
		code, out, errs = cmd("audit", "stats", "--config", cfg, "--top", "1", "-o", "json")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		var rep struct {
			Records       int
			TopDuplicates []struct{ Key string } `json:"top_duplicates"`
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Records != 3 || len(rep.TopDuplicates) != 1 || rep.TopDuplicates[0].Key != "k1" {
			t.Fatalf("%+v, %v: %s", rep, err, out)
		}
	})
	t.Run("show", func(t *testing.T) {
		// The coordinates may stand before the flags; PARTITION/OFFSET
		// names the audit topic.
		code, out, errs := cmd("audit", "show", "0/1", "--config", cfg)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		t.Logf("kdedup audit show 0/1:\n%s", out)
		for _, want := range []string{"audit record dedup.audit/0/1\n", "first-seen record push-events/0/0\n", "values differ (json diff: first-seen → audit record):\n  ~ $.amount: 10 → 12\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("lacks %q", want)
			}
		}
		code, out, errs = cmd("audit", "show", "--config", cfg, "-o", "json", "dedup.audit/0/0")
		if code != 0 || !strings.Contains(out, `"diff":{"kind":"equal","lines":[]}`) {
			t.Fatalf("exit %d: %s%s", code, out, errs)
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no subcommand", []string{"audit"}, 2, "want tail, stats or show"},
		{"unknown subcommand", []string{"audit", "frob"}, 2, `unknown command "frob"`},
		{"unknown stream", []string{"audit", "tail", "--config", cfg, "--stream", "nope"}, 2, `unknown stream "nope" (configured streams: push, orders)`},
		{"unknown reason", []string{"audit", "stats", "--config", cfg, "--reason", "dupe"}, 2, `unknown reason "dupe"`},
		{"since and from-beginning", []string{"audit", "tail", "--config", cfg, "--since", "1h", "--from-beginning"}, 2, "exclude each other"},
		{"bad since", []string{"audit", "tail", "--config", cfg, "--since", "soon"}, 2, "--since:"},
		{"bad output", []string{"audit", "tail", "--config", cfg, "-o", "xml"}, 2, `-o "xml": want table or json`},
		{"negative top", []string{"audit", "stats", "--config", cfg, "--top", "-1"}, 2, "--top -1"},
		{"show without a record", []string{"audit", "show", "--config", cfg}, 2, "want one record"},
		{"show two records", []string{"audit", "show", "--config", cfg, "a/0/1", "a/0/2"}, 2, "want one record"},
		{"malformed coordinates", []string{"audit", "show", "--config", cfg, "dedup.audit/x/1"}, 2, "malformed record coordinates"},
		{"record not found", []string{"audit", "show", "--config", cfg, "dedup.audit/0/99"}, 1, "no such record"},
		{"aborted record", []string{"audit", "show", "--config", cfg, "dedup.audit/0/4"}, 1, "no such record"},
		{"missing topic", []string{"audit", "tail", "--config", cfg, "--audit-topic", "nope"}, 1, "topic nope does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := cmd(tc.args...)
			if code != tc.code || !strings.Contains(errs, tc.msg) {
				t.Fatalf("exit %d, want %d with %q:\n%s%s", code, tc.code, tc.msg, out, errs)
			}
		})
	}

	groups, err := kadm.NewClient(plain).ListGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) != 0 {
		t.Fatalf("the audit commands created groups %v", groups.Groups())
	}
}

// inOffsetOrder fails t unless the n records shown (partition and offset
// of each, by at) come partition by partition in offset order.
func inOffsetOrder(t *testing.T, n int, at func(int) (partition, offset int)) {
	t.Helper()
	last := map[int]int{}
	for i := range n {
		p, o := at(i)
		if prev, ok := last[p]; ok && o <= prev {
			t.Errorf("record %d: partition %d offset %d shown after offset %d", i, p, o, prev)
		}
		last[p] = o
	}
}
