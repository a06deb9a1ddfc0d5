// Command kdedup is the Kafka stream deduplication processor.
//
//	kdedup check --config FILE   validate a configuration, print it with defaults
//
// The command only wires the packages together: config loads and validates,
// dedup decides, state stores.
package main
