package consumer

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// client is what the loop needs of a transactional session or of a plain
// at-least-once client.
type client interface {
	PollRecords(ctx context.Context, n int) kgo.Fetches
	Begin() error
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
	// Flush waits until every record produced so far succeeded or failed.
	Flush(ctx context.Context) error
	// End ends the transaction (at-least-once: flushes and commits the
	// offsets). An error means the outcome is unknown.
	End(ctx context.Context, commit bool) (committed bool, err error)
	// Committed returns the group's committed offset of a partition as the
	// client knows it, or -1.
	Committed(topic string, partition int32) int64
	// StableOffsets asks group's coordinator for its committed offsets,
	// waiting out (failing on) offset commits of open transactions.
	StableOffsets(ctx context.Context, group string) (kadm.OffsetResponses, error)
	// PauseFetchTopics stops fetching topics (their buffered records are
	// dropped, and fetched again from the position once resumed);
	// ResumeFetchTopics fetches them again.
	PauseFetchTopics(topics ...string) []string
	ResumeFetchTopics(topics ...string)
}

type txnClient struct{ *kgo.GroupTransactSession }

func (c txnClient) StableOffsets(ctx context.Context, group string) (kadm.OffsetResponses, error) {
	return stableOffsets(ctx, c.Client(), group)
}

// stableOffsets asks group's coordinator for its committed offsets with
// RequireStable: an offset commit still pending in a transaction is
// reported as UNSTABLE_OFFSET_COMMIT, never taken for the older offset.
func stableOffsets(ctx context.Context, cl *kgo.Client, group string) (kadm.OffsetResponses, error) {
	return kadm.NewClient(cl).FetchOffsets(kadm.RequireStable(ctx), group)
}

func (c txnClient) Flush(ctx context.Context) error { return c.Client().Flush(ctx) }

func (c txnClient) PauseFetchTopics(topics ...string) []string {
	return c.Client().PauseFetchTopics(topics...)
}
func (c txnClient) ResumeFetchTopics(topics ...string) { c.Client().ResumeFetchTopics(topics...) }

func (c txnClient) Committed(topic string, partition int32) int64 {
	return committedOf(c.Client(), topic, partition)
}

func committedOf(cl *kgo.Client, topic string, partition int32) int64 {
	if o, ok := cl.CommittedOffsets()[topic][partition]; ok {
		return o.Offset
	}
	return -1
}

func (c txnClient) End(ctx context.Context, commit bool) (bool, error) {
	return c.GroupTransactSession.End(ctx, kgo.TransactionEndTry(commit))
}

// alosClient is the at-least-once client: produce, flush, then commit the
// offsets. A crash between the flush and the commit re-emits at most the
// records of one commit interval.
type alosClient struct{ cl *kgo.Client }

func (c *alosClient) PollRecords(ctx context.Context, n int) kgo.Fetches {
	return c.cl.PollRecords(ctx, n)
}
func (c *alosClient) Begin() error { return nil }
func (c *alosClient) StableOffsets(ctx context.Context, group string) (kadm.OffsetResponses, error) {
	return stableOffsets(ctx, c.cl, group)
}
func (c *alosClient) Flush(ctx context.Context) error { return c.cl.Flush(ctx) }
func (c *alosClient) PauseFetchTopics(topics ...string) []string {
	return c.cl.PauseFetchTopics(topics...)
}
func (c *alosClient) ResumeFetchTopics(topics ...string) { c.cl.ResumeFetchTopics(topics...) }
func (c *alosClient) Committed(topic string, partition int32) int64 {
	return committedOf(c.cl, topic, partition)
}
func (c *alosClient) Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	c.cl.Produce(ctx, r, promise)
}
func (c *alosClient) End(ctx context.Context, commit bool) (bool, error) {
	if err := c.cl.Flush(ctx); err != nil {
		return false, err
	}
	if !commit {
		// Something failed to produce: consume again from the committed
		// offsets. Rebuilding the client rewinds it.
		return false, errors.New("a record could not be produced; rewinding to the committed offsets")
	}
	if err := c.cl.CommitUncommittedOffsets(ctx); err != nil {
		return false, err
	}
	return true, nil
}
