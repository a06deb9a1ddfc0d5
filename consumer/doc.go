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
// group's committed offset. A keyspace behind it is restored to it from the
// changelog (every transaction wrote its state changes there; a sentinel
// read back under read_committed shows the restore has seen every committed
// one), and where the changelog does not reach, by replaying the input
// through the engine without emitting anything (decisions are a function of
// the input and the state, so the replay rebuilds exactly what the
// transactions decided). A crash at any instant therefore loses and
// duplicates nothing.
//
// A restore never runs inside a transaction. Records of a partition that is
// behind, arriving while one is open, abort it, and every partition of that
// poll that is behind is restored before the next poll: on several brokers a
// partition on a slower leader would otherwise abort every transaction.
// Restores run one after another with rebalances applied in between; one
// stops at once when its partition is revoked, and gives up (the instance
// leaves the group and rejoins) after Options.RestoreStallTimeout without
// progress. A transaction's changelog changes are applied only once its
// marker shows it committed at or below the committed offset; changes
// written ahead of their marker to bound memory mark the stamp Ahead, and
// such a state is only ever restored further. A marker beyond the committed
// offset stops the restore just after the last marker applied: the
// coordinator then says whether the session's offset was stale (rejoin) or
// the offsets were moved back (the state is dropped and rebuilt).
//
// At least once. Without transactions the loop produces, flushes, commits the
// offsets and then writes the state. A crash between the flush and the offset
// commit re-emits the records of at most one commit interval.
//
// The package knows nothing of record formats: the producer package builds
// every record.
package consumer
