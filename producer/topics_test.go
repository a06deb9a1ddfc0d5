package producer

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func admin(t *testing.T, brokers ...string) *kadm.Client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RetryTimeout(2*time.Second), kgo.MetadataMinAge(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// waitPartitions waits until the broker lists topic with n partitions (the
// client's metadata cache may lag a creation by its minimum age).
func waitPartitions(t *testing.T, adm *kadm.Client, topic string, n int32) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		details, err := adm.ListTopics(context.Background())
		got := len(details[topic].Partitions)
		if err == nil && got == int(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d partitions on the broker (%v), want %d", topic, got, err, n)
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a condition, not a stand-in for one
	}
}

func TestEnsureTopics(t *testing.T) {
	c := kfake.MustCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "push-events"), kfake.SeedTopics(2, "order-events"), kfake.SeedTopics(7, "order-events.deduped"))
	defer c.Close()
	adm := admin(t, c.ListenAddrs()...)
	ctx := context.Background()
	plan := TopicPlan{
		Streams: []StreamTopics{{"push-events", "push-events.deduped"}, {"order-events", "order-events.deduped"}, {"new-events", "new-events.deduped"}},
		Audit:   "dedup.audit", CreateInputs: 3,
	}
	parts, err := EnsureTopics(ctx, adm, plan, c.ListenAddrs(), 10*time.Second, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	want := Partitions{"push-events": 4, "push-events.deduped": 4, "order-events": 2, "order-events.deduped": 7, "new-events": 3, "new-events.deduped": 3, "dedup.audit": 4}
	for topic, n := range want {
		if parts[topic] != n {
			t.Errorf("%s: %d partitions reported, want %d", topic, parts[topic], n)
		}
	}
	for topic, n := range want {
		waitPartitions(t, adm, topic, n)
	}
	// Idempotent: a second run (another instance) changes nothing.
	if again, err := EnsureTopics(ctx, adm, plan, c.ListenAddrs(), 10*time.Second, zerolog.Nop()); err != nil || len(again) != len(parts) {
		t.Fatalf("second run: %v, %v", again, err)
	}
}

func TestEnsureTopicsWaitsForInputs(t *testing.T) {
	c := kfake.MustCluster(kfake.NumBrokers(1))
	defer c.Close()
	adm := admin(t, c.ListenAddrs()...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := EnsureTopics(ctx, adm, TopicPlan{Streams: []StreamTopics{{"late", "late.deduped"}}, Audit: "a"}, c.ListenAddrs(), 5*time.Second, zerolog.Nop())
		done <- err
	}()
	if _, err := adm.CreateTopics(ctx, 2, 1, nil, "late"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitPartitions(t, adm, "late.deduped", 2)
}

func TestEnsureTopicsNamesDeadBrokers(t *testing.T) {
	adm := admin(t, "127.0.0.1:1")
	start := time.Now()
	_, err := EnsureTopics(context.Background(), adm, TopicPlan{Streams: []StreamTopics{{"a", "b"}}}, []string{"127.0.0.1:1"}, 3*time.Second, zerolog.Nop())
	if !errors.Is(err, ErrBrokers) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("error %v does not name the broker", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("gave up after %v", d)
	}
}
