package e2e_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestKfakeFencedProduceStartsTxn pins the kfake behaviour TestSoak's
// staleImplicitTxn allows for: a Produce of a fenced epoch is refused
// (INVALID_PRODUCER_EPOCH), but kfake has added its partition to the
// transactional id's transaction first (the KIP-890 implicit add), so a
// transaction is left Ongoing with no record in it until its timeout.
// Apache Kafka checks the epoch first. When this test fails, kfake has
// been fixed and staleImplicitTxn can go.
func TestKfakeFencedProduceStartsTxn(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := func(opts ...kgo.Opt) *kgo.Client {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	txnOpts := []kgo.Opt{kgo.TransactionalID("x"), kgo.TransactionTimeout(10 * time.Second), kgo.DefaultProduceTopic("t")}
	old := client(txnOpts...)
	if err := old.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := old.ProduceSync(ctx, &kgo.Record{Value: []byte("1")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := old.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	// The fence, as kdedup's shutdown does it: a new client initialises
	// the transactional id, bumping its epoch.
	if _, _, err := client(txnOpts...).ProducerID(ctx); err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(client())
	state := func() kadm.DescribedTransaction {
		d, err := adm.DescribeTransactions(ctx, "x")
		if err != nil {
			t.Fatal(err)
		}
		return d["x"]
	}
	if s := state().State; s == "Ongoing" {
		t.Fatalf("Ongoing right after the fence")
	}
	if err := old.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := old.ProduceSync(ctx, &kgo.Record{Value: []byte("2")}).FirstErr(); !errors.Is(err, kerr.InvalidProducerEpoch) {
		t.Fatalf("a fenced epoch's produce: %v, want INVALID_PRODUCER_EPOCH", err)
	}
	if d := state(); d.State != "Ongoing" {
		t.Fatalf("after the fenced produce the transaction is %s: kfake no longer starts one, so TestSoak's staleImplicitTxn is not needed", d.State)
	}
}
