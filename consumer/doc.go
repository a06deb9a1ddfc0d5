// Package consumer runs kdedup's processing loop: group membership and the
// transactional poll → decide → produce → commit cycle, partition
// assignment, revocation and loss, and restoring a partition's state before
// its records are decided.
//
// Exactly once. One franz-go GroupTransactSession per instance (transactional
// id <group>-<instance_id>, static membership from the instance id,
// read_committed) consumes every input. The records of a commit interval are
// decided against in-memory batches over each partition's Pebble keyspace,
// their output and audit records are produced, and the input offsets are
// committed, all in one Kafka transaction. Only after it commits are the
// batches written to Pebble, each with the stamp of the offsets it reflects.
// A transaction that aborts — a produce failed, the group rebalanced — leaves
// nothing: the batches are dropped and the client rewinds to the committed
// offsets. A transaction whose outcome is unknown (End failed) is not
// guessed: the session is rebuilt and every partition's stamp checked again.
//
// Restore. Before deciding a partition's first record after it was assigned,
// or after an abort, the processor compares the keyspace's stamp with the
// offset the group resumed from and replays the committed records in between
// through the engine without emitting anything (decisions are a function of
// the input and the state, so the replay rebuilds exactly what the
// transactions decided). A crash at any instant therefore loses and
// duplicates nothing.
//
// At least once. Without transactions the loop produces, flushes, commits the
// offsets and then writes the state. A crash between the flush and the offset
// commit re-emits the records of at most one commit interval.
//
// The package knows nothing of record formats: the producer package builds
// every record.
package consumer
