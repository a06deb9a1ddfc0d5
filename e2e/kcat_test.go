package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/internal/e2e"
)

// kcatRecord is a record as kcat -J prints it.
type kcatRecord struct {
	Topic     string   `json:"topic"`
	Partition int32    `json:"partition"`
	Offset    int64    `json:"offset"`
	TS        int64    `json:"ts"`
	Headers   []string `json:"headers"` // name, value, name, value, ...
	Key       *string  `json:"key"`
	Payload   *string  `json:"payload"`
}

// line renders a record the same way from either reader.
func line(topic string, partition int32, offset, ts int64, key, value *string, headers []string) string {
	s := func(p *string) string {
		if p == nil {
			return "<null>"
		}
		return fmt.Sprintf("%q", *p)
	}
	return fmt.Sprintf("%s/%d/%d ts=%d key=%s value=%s headers=%q", topic, partition, offset, ts, s(key), s(value), headers)
}

// kcat reads topic from the start to its end under isolation with kcat.
func kcat(t *testing.T, brokers []string, topic, isolation string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kcat", "-C", "-b", strings.Join(brokers, ","), "-t", topic,
		"-o", "beginning", "-e", "-J", "-q", "-X", "isolation.level="+isolation)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat %s: %v\n%s", topic, err, stderr.String())
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r kcatRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("kcat printed %q: %v", sc.Text(), err)
		}
		lines = append(lines, line(r.Topic, r.Partition, r.Offset, r.TS, r.Key, r.Payload, r.Headers))
	}
	sort.Strings(lines)
	return lines
}

// goLines renders records read by the Go reader.
func goLines(rs []*kgo.Record, topic string) []string {
	var lines []string
	for _, r := range rs {
		if r.Topic != topic {
			continue
		}
		var key, value *string
		if r.Key != nil {
			k := string(r.Key)
			key = &k
		}
		if r.Value != nil {
			v := string(r.Value)
			value = &v
		}
		hs := []string{}
		for _, h := range r.Headers {
			hs = append(hs, h.Key, string(h.Value))
		}
		lines = append(lines, line(r.Topic, r.Partition, r.Offset, r.Timestamp.UnixMilli(), key, value, hs))
	}
	sort.Strings(lines)
	return lines
}

// TestKcatAgrees reads kdedup's output and audit topics, after a run with
// SIGKILLs (so the topics hold aborted transactions), with kcat — librdkafka,
// a client nobody here wrote — under isolation.level=read_committed, and
// requires it to agree with the suite's Go reader record for record.
func TestKcatAgrees(t *testing.T) {
	if _, err := exec.LookPath("kcat"); err != nil {
		t.Skip("kcat is not installed (Debian: apt-get install -y kcat)")
	}
	e := setup(t)
	if e.secure != nil {
		t.Fatal("kcat cross-check runs on a plaintext cluster")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	const rounds, perRound = 4, 1_500
	kills, _, in := crashLoop(t, e, e.config(t, "kcat", ""), seed, rounds, perRound)
	rep := e.verify(t, rounds*perRound)
	in.stop(t)
	if !rep.OK() {
		t.Fatalf("%v\n%s", rep, in.logs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Aborted records in every topic, whatever the kills left: what
	// read_committed must hide.
	const aborted = 100
	tcl, err := kgo.NewClient(e.conn(kgo.TransactionalID(e.tp.Prefix+"kcat-aborter"), kgo.DefaultProduceTopic(e.tp.Audit))...)
	if err != nil {
		t.Fatal(err)
	}
	if err := tcl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for _, topic := range e.tp.Decided() {
		for i := 0; i < aborted; i++ {
			tcl.Produce(ctx, &kgo.Record{Topic: topic, Value: []byte("aborted")}, nil)
		}
	}
	if err := tcl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tcl.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	tcl.Close()
	decided, err := e2e.ReadAll(ctx, e.conn(), rounds*perRound, 2*time.Second, e.tp.Decided()...)
	if err != nil {
		t.Fatal(err)
	}
	total, uncommitted := 0, 0
	for _, topic := range e.tp.Decided() {
		want := goLines(decided, topic)
		got := kcat(t, e.bs, topic, "read_committed")
		total += len(got)
		uncommitted += len(kcat(t, e.bs, topic, "read_uncommitted"))
		if len(got) != len(want) {
			t.Errorf("%s: kcat read %d records, the Go reader %d", topic, len(got), len(want))
		}
		for i := 0; i < min(len(got), len(want)); i++ {
			if got[i] != want[i] {
				t.Fatalf("%s: first difference:\n kcat: %s\n   go: %s", topic, got[i], want[i])
			}
		}
	}
	t.Logf("kcat agrees on %d committed records after %d SIGKILLs (%d records under read_uncommitted, aborted ones included)", total, kills, uncommitted)
	if uncommitted < total+aborted*len(e.tp.Decided()) {
		t.Fatalf("kcat under read_uncommitted read %d records: the %d aborted ones are missing", uncommitted, aborted*len(e.tp.Decided()))
	}
}
