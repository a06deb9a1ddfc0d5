// Package audit reads kdedup's audit topic back: the records kdedup did
// not forward (duplicates, conflicts, invalid, missing and malformed keys,
// refusals and admin forgets), each the input record unchanged plus the
// dedup.* headers of package producer.
//
// A Source reads a topic under read_committed without joining a consumer
// group: it assigns itself the partitions directly, so it never disturbs
// kdedup's group and commits nothing. Filter selects records by stream,
// reason and key; Stats counts them; Show pairs an audit record with the
// first-seen record its dedup.first header names and Diff tells how the
// two values differ. Encoder and Table render records as JSON lines and
// as an aligned table. docs/audit.md documents the kdedup audit commands
// built on it.
package audit
