// Package dedup decides, for each record of a stream, whether its
// idempotency key is first seen, a duplicate, a conflict (the key reused
// with a different payload), invalid, missing or malformed — the decisions of
// docs/decisions.md.
//
// The package is pure: it knows nothing of Kafka or Pebble. It reaches the
// key store through the small State interface, which the state package
// implements over Pebble and tests implement over a map.
//
// Key extraction tries the stream's sources in order (a header, a dotted JSON
// path, a fingerprint of listed JSON fields, a fingerprint of the whole
// value); the first non-empty key wins and only it is validated. A record's
// value is parsed as JSON at most once, and only when a JSON source, scope
// part or compare field is reached: one pass validates the whole value (as
// json.Valid does) and locates every configured path.
//
// Keys are namespaced by the stream name and the scope parts and stored as a
// 16-byte SHA-256 prefix (Hash). Windows run in event time (record
// timestamps), never wall-clock time, so a replay decides exactly as the
// first run did. A key is live for records with timestamp < Expiry; under
// ttl_mode refresh every duplicate moves Expiry to its own timestamp + ttl.
// A key is also retired once the partition's newest event time reaches
// Expiry + lateness, which lets the store collect garbage at any moment
// without changing a single decision.
//
// An Engine is not safe for concurrent use; deciding a record whose key comes
// from a header makes no heap allocation.
package dedup
