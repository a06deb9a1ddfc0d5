package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole configuration of one kdedup instance, as read from the
// YAML file (docs/configuration.md), then the environment (KDEDUP_ + the
// upper-cased field path), then command-line overrides.
//
// The zero value is not usable: call EnsureDefaults, then Validate. Load does
// both.
type Config struct {
	// Brokers are the seed brokers, host:port. Default: empty, which starts
	// the embedded Kafka-protocol broker on 127.0.0.1:9092 so that kdedup
	// works on a machine with nothing else installed.
	Brokers []string `yaml:"brokers"`
	// SASL authenticates kdedup to the brokers. Default: none.
	SASL SASL `yaml:"sasl"`
	// TLS encrypts the connections to the brokers. Default: off
	// (plaintext).
	TLS TLS `yaml:"tls"`
	// Group is the consumer group id and the prefix of the transactional id
	// (<group>-<instance_id>). Default: "kdedup".
	Group string `yaml:"group"`
	// InstanceID names this instance uniquely within the group; it is the
	// static group member id and the suffix of the transactional id, so it
	// must stay the same across restarts of the same instance. Default: the
	// host name.
	InstanceID string `yaml:"instance_id"`
	// StateDir holds the Pebble state (and the embedded broker's data).
	// Default: "./data".
	StateDir string `yaml:"state_dir"`
	// AuditTopic receives every record that is not first-seen, with dedup.*
	// headers. Default: "dedup.audit".
	AuditTopic string `yaml:"audit_topic"`
	// ChangelogTopic receives every state change, for handover between
	// instances. Default: "<group>.changelog".
	ChangelogTopic string `yaml:"changelog_topic"`
	// Changelog turns the changelog on or off. Off (false), kdedup writes
	// no changelog records, which saves their cost in every transaction,
	// and a partition that moves to an instance without its state, or
	// whose local state was lost, is rebuilt by replaying its input from
	// the start: exact only while the input topics still hold every
	// record back to the oldest live key's first copy, and as slow as
	// that replay. Under at_least_once no changelog is written either
	// way. Default: true.
	Changelog *bool `yaml:"changelog"`
	// Guarantee is exactly_once (Kafka transactions) or at_least_once.
	// Default: exactly_once.
	Guarantee string `yaml:"guarantee"`
	// CommitInterval is how long one transaction collects records before it
	// commits. Default: 100ms.
	CommitInterval Duration `yaml:"commit_interval"`
	// AdminAddr is the listen address of /metrics, /healthz, /readyz and the
	// admin API. Default: empty, which disables it (several instances often
	// share one host, and a fixed default port would collide).
	AdminAddr string `yaml:"admin_addr"`
	// AdminToken, when set, guards the admin API (/v1/...) and the state
	// endpoints (/state/...): a request must carry "Authorization: Bearer
	// <token>" or is answered 401. /healthz, /readyz and /metrics stay
	// open. Without a token those endpoints are served only when
	// admin_addr is a loopback address (127.0.0.1, ::1, localhost), and
	// answered 403 elsewhere: anyone who reaches the port could otherwise
	// make a key pass twice. Set it in the environment
	// (KDEDUP_ADMIN_TOKEN) or use AdminTokenFile rather than in the file.
	// It is never logged, and printed redacted. Default: empty.
	AdminToken Secret `yaml:"admin_token"`
	// AdminTokenFile is a file holding the admin token (one trailing
	// newline is ignored), as a mounted Kubernetes or Docker secret.
	// Loading the configuration checks that it exists; it is read when
	// the admin listener starts and by kdedup's commands that call an
	// instance (ReadAdminToken). Default: empty.
	AdminTokenFile string `yaml:"admin_token_file"`
	// AdminTLS serves the admin address over HTTPS. Default: off (plain
	// HTTP).
	AdminTLS AdminTLS `yaml:"admin_tls"`
	// LogLevel is the least severe level logged: debug, info, warn or
	// error. Default: info.
	LogLevel string `yaml:"log_level"`
	// State tunes the Pebble store.
	State StateOptions `yaml:"state"`
	// Streams are the deduplicated streams; at least one is required.
	Streams []Stream `yaml:"streams"`

	// Ignored lists, sorted, the names of the KDEDUP_ environment variables
	// that Load saw but that name no field (for example a variable meant for
	// another tool, or KDEDUP_STREAMS_3_TTL when there are only two streams),
	// so that the caller can warn about them. It is never read from YAML.
	// Default: empty.
	Ignored []string `yaml:"-"`
}

// SASL is the SASL authentication to the brokers. Every field needs
// brokers: the embedded broker takes no SASL.
type SASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (any case).
	// Default: empty, no SASL. PLAIN sends the password as it is: use it
	// with TLS.
	Mechanism string `yaml:"mechanism"`
	// Username is the SASL user. Required with a mechanism.
	Username string `yaml:"username"`
	// Password is the user's password. Exactly one of Password and
	// PasswordFile is required with a mechanism. Rather than in the file,
	// set it in the environment (KDEDUP_SASL_PASSWORD) or use
	// PasswordFile. It is never logged, and printed redacted.
	Password Secret `yaml:"password"`
	// PasswordFile is a file holding the password (one trailing newline
	// is ignored), as a mounted Kubernetes or Docker secret. Loading the
	// configuration checks that it exists; it is read when kdedup
	// connects.
	PasswordFile string `yaml:"password_file"`
}

// TLS is the TLS of the connections to the brokers. Setting any field
// enables it; every field needs brokers.
type TLS struct {
	// Enabled turns TLS on with the system's root certificates and no
	// client certificate. Default: false, unless another field is set.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM file of the certificate authorities that verify the
	// brokers. Default: the system's roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// brokers that authenticate clients by certificate (mTLS). Both or
	// neither. Default: none.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name the brokers' certificates must carry.
	// Default: the host of each broker address.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any broker certificate: for tests only,
	// it allows a man in the middle. Default: false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// ReadAdminToken returns the admin token: AdminToken, or the content of
// AdminTokenFile without one trailing newline; "" when neither is set.
func (c *Config) ReadAdminToken() (string, error) {
	if c.AdminTokenFile == "" {
		return c.AdminToken.Reveal(), nil
	}
	b, err := os.ReadFile(c.AdminTokenFile)
	if err != nil {
		return "", fmt.Errorf("admin_token_file: %w", err)
	}
	tok := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if tok == "" {
		return "", fmt.Errorf("admin_token_file: %s is empty", c.AdminTokenFile)
	}
	return tok, nil
}

// AdminTLS is the TLS of the admin listener.
type AdminTLS struct {
	// CertFile and KeyFile are the PEM certificate the admin listener
	// presents and its key. Both or neither; both set turns HTTPS on.
	// Default: none, plain HTTP.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// CAFile is a PEM file of the certificate authorities that verify the
	// admin certificate when kdedup's own commands (kdedup keys, kdedup
	// state snapshot) call an instance. Default: the system's roots.
	CAFile string `yaml:"ca_file"`
}

// On reports whether the admin listener serves HTTPS.
func (t AdminTLS) On() bool { return t.CertFile != "" || t.KeyFile != "" }

// On reports whether TLS is enabled: Enabled or any other field set.
func (t TLS) On() bool {
	return t.Enabled || t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify
}

// Secret is a string that is never shown: it prints, marshals and logs as
// "[redacted]" (empty when empty).
type Secret string

// String returns "[redacted]", or "" for an empty secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// MarshalText redacts the secret, so that `kdedup check` and any
// serialized configuration never carry it.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Reveal returns the secret itself, for the one place that uses it.
func (s Secret) Reveal() string { return string(s) }

// StateOptions size the Pebble store and the memory of the process. All
// are shared by every partition of the instance.
type StateOptions struct {
	// CacheSize is the block cache size. Default: 64MiB.
	CacheSize ByteSize `yaml:"cache_size"`
	// MemtableSize is the size of one memtable. Default: 16MiB.
	MemtableSize ByteSize `yaml:"memtable_size"`
	// MinFreeSpace is the free space floor of state_dir's file system:
	// below it kdedup stops deciding records (it finishes the open
	// transaction, pauses its fetches and answers /readyz 503) until the
	// file system has room again, so that Pebble never meets a full disk
	// with changes it must keep (a write that fails there can take the
	// process down, and a restart loop is not failing closed). It must
	// cover what Pebble may still write while kdedup stops: a WAL and a
	// flush of the memtables, and the compactions under way. Default
	// (nil, omitted): 256MiB; 0 turns the check off.
	MinFreeSpace *ByteSize `yaml:"min_free_space"`
	// Memory is the memory the process may take. What CacheSize and two
	// memtables leave of it sets Go's memory limit (90% of it; GOMEMLIMIT,
	// when set in the environment, wins). It bounds the in-memory key
	// indexes of all partitions together to 3/8 of it (past that, a
	// partition keeps a cuckoo filter of about 2.7 bytes a key, or reads
	// Pebble's bloom filters for new keys: slower, no more memory), and
	// sizes a restore's buffers (1/16 of it, at most 64MiB each).
	// Default: 1GiB, which holds 100M live keys (measured in
	// BENCHMARKS.md). At least 128MiB.
	Memory ByteSize `yaml:"memory"`
}

// Stream is one input topic deduplicated into one output topic.
type Stream struct {
	// Name names the stream in audit records (dedup.stream) and is part of
	// every key's namespace. Required, unique.
	Name string `yaml:"name"`
	// Input is the topic read. Required, unique across streams.
	Input string `yaml:"input"`
	// Output receives the first-seen records. Default: "<input>.deduped".
	Output string `yaml:"output"`
	// TTL is how long a key stays live after it is first seen, in event time
	// (record timestamps). Required, > 0.
	TTL Duration `yaml:"ttl"`
	// TTLMode is fixed (the window runs from the first-seen record) or
	// refresh (every duplicate restarts the window). Default: fixed.
	TTLMode string `yaml:"ttl_mode"`
	// Lateness is how far behind the newest event time of its partition a
	// record may be and still be decided exactly by its key's window. A key
	// is kept until the partition's event time passes its expiry by
	// Lateness; after that it is retired and garbage collected. Default (nil,
	// the field omitted): the stream's TTL; 0 is a valid setting.
	Lateness *Duration `yaml:"lateness"`
	// Key lists the key sources, tried in order; the first that yields a
	// non-empty key wins. At least one is required.
	Key []KeySource `yaml:"key"`
	// Scope lists the parts that namespace the key, each header:NAME or
	// json:PATH. A missing part counts as the empty string. Default: none.
	Scope []ScopePart `yaml:"scope"`
	// KeyMaxLength rejects longer keys (bytes) as invalid_key. Default: 0, no
	// limit.
	KeyMaxLength int `yaml:"key_max_length"`
	// KeyFormat is any or uuid (8-4-4-4-12 hex digits). Default: any.
	KeyFormat string `yaml:"key_format"`
	// Compare lists the JSON fields (dotted paths) whose values tell a
	// conflict from a duplicate. Default: empty, which compares the whole
	// value's bytes.
	Compare []string `yaml:"compare"`
	// Repartition re-keys the input by the scoped idempotency key into
	// RepartitionTopic (in the same transaction as the input offsets)
	// before deduplicating, for inputs whose copies of a key may sit in
	// different partitions. Default: false: the input must be partitioned
	// so that every copy of a key reaches the same partition.
	Repartition bool `yaml:"repartition"`
	// RepartitionTopic is the internal topic of the repartition step,
	// created with the input's partition count. Default (with
	// repartition): "<group>.<name>.repartition".
	RepartitionTopic string `yaml:"repartition_topic"`
}

// Values of Config.Guarantee, Stream.TTLMode and Stream.KeyFormat.
const (
	ExactlyOnce   = "exactly_once"
	AtLeastOnce   = "at_least_once"
	TTLFixed      = "fixed"
	TTLRefresh    = "refresh"
	KeyFormatAny  = "any"
	KeyFormatUUID = "uuid"
)

// KeySource is one way to find a record's idempotency key. Exactly one of
// its fields is set.
type KeySource struct {
	// Header takes the key from the header of this name (exact match; the
	// last occurrence counts).
	Header string `yaml:"header,omitempty"`
	// JSON takes the key from this dotted path into the JSON value.
	JSON string `yaml:"json,omitempty"`
	// Fingerprint derives the key from the value: a hash of the listed JSON
	// fields, or of the whole value when written as `fingerprint: value`.
	Fingerprint *Fingerprint `yaml:"fingerprint,omitempty"`
}

// Fingerprint is a key derived from the record's value. In YAML it is either
// a list of dotted JSON paths or the string "value".
type Fingerprint struct {
	// Whole is true for `fingerprint: value`: the hash of the value's bytes.
	Whole bool
	// Fields are the dotted JSON paths hashed otherwise.
	Fields []string
}

// MarshalYAML writes the fingerprint as in the configuration file: the
// string "value" when Whole, the list of fields otherwise.
func (f Fingerprint) MarshalYAML() (any, error) {
	if f.Whole {
		return "value", nil
	}
	if f.Fields == nil {
		return []string{}, nil
	}
	return f.Fields, nil
}

// UnmarshalYAML reads the string "value" or a list of fields, for callers
// that decode with yaml.Unmarshal rather than Load. It reports the first
// problem only; Load reports them all, with their paths.
func (f *Fingerprint) UnmarshalYAML(n *yaml.Node) error {
	d := &decoder{}
	fp := d.fingerprint(n, "fingerprint")
	if len(d.problems) > 0 {
		return errors.New(d.problems[0].String())
	}
	*f = *fp
	return nil
}

// ScopePart is one part of a key's namespace: a header or a JSON path. In
// YAML it is written "header:NAME" or "json:PATH".
type ScopePart struct {
	// Header is the header name, when the part is header:NAME.
	Header string
	// JSON is the dotted path, when the part is json:PATH.
	JSON string
}

// String returns the part as written in YAML.
func (p ScopePart) String() string {
	if p.JSON != "" {
		return "json:" + p.JSON
	}
	return "header:" + p.Header
}

// UnmarshalText parses "header:NAME" or "json:PATH".
func (p *ScopePart) UnmarshalText(b []byte) error {
	s := string(b)
	switch {
	case strings.HasPrefix(s, "header:") && len(s) > len("header:"):
		*p = ScopePart{Header: s[len("header:"):]}
	case strings.HasPrefix(s, "json:") && len(s) > len("json:"):
		*p = ScopePart{JSON: s[len("json:"):]}
	default:
		return fmt.Errorf("want header:NAME or json:PATH, got %q", s)
	}
	return nil
}

// MarshalText writes the part as in YAML.
func (p ScopePart) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// Duration is a time.Duration written as Go writes durations ("1h30m").
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q", string(b))
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration as Go does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// String writes the duration as Go does ("1h30m0s").
func (d Duration) String() string { return time.Duration(d).String() }

// ByteSize is a size in bytes, written as a plain number or with a unit
// (KB, MB, GB: powers of 1000; KiB, MiB, GiB: powers of 1024).
type ByteSize int64

// byteUnits are the units of ByteSize, largest first.
var byteUnits = []struct {
	name string
	size int64
}{
	{"TiB", 1 << 40}, {"TB", 1e12}, {"GiB", 1 << 30}, {"GB", 1e9},
	{"MiB", 1 << 20}, {"MB", 1e6}, {"KiB", 1 << 10}, {"KB", 1e3},
}

// UnmarshalText parses a whole number of bytes, optionally followed by a unit
// (B; KB, MB, GB, TB: powers of 1000; KiB, MiB, GiB, TiB: powers of 1024),
// with or without a space between: "1048576", "500MB", "64MiB", "64 MiB".
// Units are case-sensitive.
func (s *ByteSize) UnmarshalText(b []byte) error {
	text := string(b)
	str := strings.TrimSpace(text)
	i := 0
	if i < len(str) && (str[i] == '-' || str[i] == '+') {
		i++
	}
	digits := i
	for i < len(str) && str[i] >= '0' && str[i] <= '9' {
		i++
	}
	if i == digits {
		return fmt.Errorf("invalid size %q (want e.g. 1048576, 500MB or 64MiB)", text)
	}
	n, err := strconv.ParseInt(str[:i], 10, 64)
	if err != nil {
		return fmt.Errorf("invalid size %q: too large", text)
	}
	unit := strings.TrimSpace(str[i:])
	mult := int64(0)
	switch unit {
	case "", "B":
		mult = 1
	default:
		for _, u := range byteUnits {
			if u.name == unit {
				mult = u.size
			}
		}
	}
	if mult == 0 {
		return fmt.Errorf("invalid size %q: unknown unit %q (want B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)", text, unit)
	}
	if n > math.MaxInt64/mult || n < math.MinInt64/mult {
		return fmt.Errorf("invalid size %q: too large", text)
	}
	*s = ByteSize(n * mult)
	return nil
}

// MarshalText writes the size with the largest unit that divides it exactly
// ("64MiB", "500MB"), or as plain bytes.
func (s ByteSize) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// String writes the size as MarshalText does.
func (s ByteSize) String() string {
	n := int64(s)
	if n != 0 {
		for _, u := range byteUnits {
			if n%u.size == 0 {
				return strconv.FormatInt(n/u.size, 10) + u.name
			}
		}
	}
	return strconv.FormatInt(n, 10)
}
