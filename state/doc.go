// Package state is kdedup's key store: a Pebble database holding one
// keyspace per input topic-partition.
//
// A keyspace holds, per key, the dedup.Entry the engine decided (first-seen
// timestamp and coordinates, expiry, payload fingerprint), an index of
// retirement times (expiry + the stream's lateness) that makes garbage
// collection cost O(retired keys), and a Stamp: the input and changelog
// offsets the keyspace reflects and its event-time watermark.
//
// The runtime decides a transaction's records against a Batch (reads see
// the batch's own writes first), and only after the Kafka transaction
// commits writes the batch to Pebble together with the new stamp, in one
// atomic Pebble batch, without fsync. An aborted transaction leaves nothing
// behind; a crash leaves a prefix of committed batches whose stamps say
// exactly what it holds.
//
// Keyspaces are opened, closed and dropped independently: state of
// partitions an instance is not assigned is left alone. The common lookup,
// a new key, is answered by an in-memory index of the open keyspace's
// stored keys without reading Pebble (Partition); bloom filters on every
// level make the lookups it passes on cheap when they miss; the block
// cache and memtable sizes are set explicitly (Options).
//
// The package knows nothing of Kafka clients.
package state
