// Package config owns kdedup's configuration contract (docs/configuration.md): the Config type and its defaults, reading it, and deciding whether
// it is usable.
//
// Load reads a configuration from three sources, each overriding the one
// before it:
//
//  1. the YAML file;
//  2. the environment: KDEDUP_ followed by the upper-cased field path
//     (KDEDUP_BROKERS=a:9092,b:9092, KDEDUP_STREAMS_0_TTL=2h; see EnvName);
//  3. overrides by field path, from command-line flags
//     (--set streams[0].ttl=2h; see Override).
//
// It then fills in the defaults (EnsureDefaults) and checks the result
// (Validate). Every problem is reported, not just the first, as an *Error
// with one line per problem, each naming the field:
//
//	streams[1].ttll: unknown field
//	streams[0].ttl: invalid duration "soon"
//	KDEDUP_COMMIT_INTERVAL (commit_interval): invalid duration "x"
//	--set streams[0].ttl: invalid duration "x"
//
// The package only describes and checks the configuration. It knows nothing
// of Kafka clients or Pebble: it checks topic names and the like against
// Kafka's naming rules, but never connects to anything, and the packages
// that run the processor take a validated Config from it.
package config
