// Package producer builds the records kdedup writes and creates the topics
// it writes them to.
//
// An output record is the input record unchanged — key, value, headers and
// timestamp — in the input's partition when the output topic has as many
// partitions as the input, else in the partition Kafka's default
// partitioner would pick for its key (murmur2), so that consumers keyed on
// the same key agree with other producers. An audit record is the input
// record unchanged plus the dedup.* headers of docs/records.md, in partition
// (input partition mod audit partitions), so that the audit keeps each
// input partition's order.
//
// The package knows nothing of group membership.
package producer
