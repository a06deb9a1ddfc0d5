package config

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Defaults that EnsureDefaults applies (see the field docs of Config).
const (
	defaultGroup          = "kdedup"
	defaultInstanceID     = "kdedup-1" // when the host name is unknown
	defaultStateDir       = "./data"
	defaultAuditTopic     = "dedup.audit"
	defaultCommitInterval = Duration(100 * time.Millisecond)
	defaultCacheSize      = ByteSize(64 << 20)
	defaultMemtableSize   = ByteSize(16 << 20)
	defaultMemory         = ByteSize(1 << 30)
	defaultMinFreeSpace   = ByteSize(256 << 20)
	minMemory             = ByteSize(128 << 20)
	changelogSuffix       = ".changelog"   // changelog_topic is <group> + changelogSuffix
	outputSuffix          = ".deduped"     // a stream's output is <input> + outputSuffix
	repartitionSuffix     = ".repartition" // a stream's repartition topic is <group>.<name> + repartitionSuffix
)

// EnsureDefaults sets every empty field that has a default to it: group
// "kdedup", instance_id the host name ("kdedup-1" when that is
// unknown), state_dir "./data", audit_topic "dedup.audit", changelog_topic
// "<group>.changelog", guarantee exactly_once, commit_interval 100ms,
// state.cache_size 64MiB, state.memtable_size 16MiB, state.memory 1GiB,
// state.min_free_space 256MiB, and in every stream
// output "<input>.deduped" (when input is set), ttl_mode fixed, key_format
// any, lateness the stream's ttl (when lateness is omitted) and, with
// repartition, repartition_topic "<group>.<name>.repartition"; it
// upper-cases sasl.mechanism.
// Brokers and admin_addr stay empty when empty: the embedded broker, and no
// admin listener. Calling it again changes nothing.
func (c *Config) EnsureDefaults() {
	c.SASL.Mechanism = strings.ToUpper(c.SASL.Mechanism)
	if c.Group == "" {
		c.Group = defaultGroup
	}
	if c.InstanceID == "" {
		if h, err := os.Hostname(); err == nil && h != "" {
			c.InstanceID = h
		} else {
			c.InstanceID = defaultInstanceID
		}
	}
	if c.StateDir == "" {
		c.StateDir = defaultStateDir
	}
	if c.AuditTopic == "" {
		c.AuditTopic = defaultAuditTopic
	}
	if c.ChangelogTopic == "" {
		c.ChangelogTopic = c.Group + changelogSuffix
	}
	if c.Guarantee == "" {
		c.Guarantee = ExactlyOnce
	}
	if c.Changelog == nil {
		on := true
		c.Changelog = &on
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = defaultCommitInterval
	}
	if c.State.CacheSize == 0 {
		c.State.CacheSize = defaultCacheSize
	}
	if c.State.MemtableSize == 0 {
		c.State.MemtableSize = defaultMemtableSize
	}
	if c.State.MinFreeSpace == nil {
		v := defaultMinFreeSpace
		c.State.MinFreeSpace = &v
	}
	if c.State.Memory == 0 {
		c.State.Memory = defaultMemory
	}
	for i := range c.Streams {
		s := &c.Streams[i]
		if s.Output == "" && s.Input != "" {
			s.Output = s.Input + outputSuffix
		}
		if s.TTLMode == "" {
			s.TTLMode = TTLFixed
		}
		if s.KeyFormat == "" {
			s.KeyFormat = KeyFormatAny
		}
		if s.Lateness == nil {
			l := s.TTL
			s.Lateness = &l
		}
		if s.Repartition && s.RepartitionTopic == "" && s.Name != "" {
			s.RepartitionTopic = c.Group + "." + s.Name + repartitionSuffix
		}
	}
}

// Validate checks the configuration as it is, defaults included: call
// EnsureDefaults first (Load does both). It returns nil or an *Error holding
// every problem, in field order, each naming the field's path.
func (c *Config) Validate() error {
	return errorOf(c.problems())
}

// maxNameLen is Kafka's limit on topic names, group ids and group instance
// ids.
const maxNameLen = 249

// checkName checks a Kafka topic name, group id or group instance id: 1 to
// 249 of [a-zA-Z0-9._-], not "." or "..".
func checkName(ps *[]Problem, path, what, name string) {
	add := func(msg string) { *ps = append(*ps, Problem{Path: path, Msg: msg}) }
	switch {
	case name == "":
		add("is required")
	case name == "." || name == "..":
		add(fmt.Sprintf("invalid %s %q: %q and %q are not allowed", what, name, ".", ".."))
	case len(name) > maxNameLen:
		add(fmt.Sprintf("invalid %s %s: longer than %d characters", what, quote(name), maxNameLen))
	default:
		for i := 0; i < len(name); i++ {
			c := name[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
				add(fmt.Sprintf("invalid %s %s: only letters, digits, '.', '_' and '-' are allowed", what, quote(name)))
				return
			}
		}
	}
}

// checkJSONPath checks a dotted JSON path: segments separated by ".", none
// empty. A segment of digits indexes an array.
func checkJSONPath(ps *[]Problem, path, p string) {
	if p == "" {
		*ps = append(*ps, Problem{Path: path, Msg: "JSON path is empty"})
		return
	}
	for seg := range strings.SplitSeq(p, ".") {
		if seg == "" {
			*ps = append(*ps, Problem{Path: path, Msg: fmt.Sprintf("invalid JSON path %s: empty segment", quote(p))})
			return
		}
	}
}

// SASL mechanisms (Config.SASL.Mechanism, upper-cased by EnsureDefaults).
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// fileExists reports, at path, a file name (if set) that cannot be read
// as a file: missing, or a directory.
func fileExists(add func(path, format string, args ...any), path, name string) {
	if name == "" {
		return
	}
	if st, err := os.Stat(name); err != nil {
		add(path, "%v", err)
	} else if st.IsDir() {
		add(path, "%s is a directory", quote(name))
	}
}

// connectionProblems checks sasl and tls.
func (c *Config) connectionProblems(add func(path, format string, args ...any)) {
	sa := c.SASL
	switch sa.Mechanism {
	case "":
		if sa.Username != "" || sa.Password != "" || sa.PasswordFile != "" {
			add("sasl.mechanism", "is required with sasl.username or a password: %s, %s or %s", SASLPlain, SASLScramSHA256, SASLScramSHA512)
		}
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
		if len(c.Brokers) == 0 {
			add("sasl.mechanism", "needs brokers: the embedded broker takes no SASL")
		}
		if sa.Username == "" {
			add("sasl.username", "is required with sasl.mechanism")
		}
		switch {
		case sa.Password == "" && sa.PasswordFile == "":
			add("sasl.password", "is required with sasl.mechanism: set it, %s, or sasl.password_file", EnvName("sasl.password"))
		case sa.Password != "" && sa.PasswordFile != "":
			add("sasl.password_file", "set sasl.password or sasl.password_file, not both")
		}
	default:
		add("sasl.mechanism", "must be %s, %s or %s, got %s", SASLPlain, SASLScramSHA256, SASLScramSHA512, quote(sa.Mechanism))
	}
	fileExists(add, "sasl.password_file", sa.PasswordFile)

	t := c.TLS
	if t.On() && len(c.Brokers) == 0 {
		add("tls", "needs brokers: the embedded broker takes no TLS")
	}
	fileExists(add, "tls.ca_file", t.CAFile)
	fileExists(add, "tls.cert_file", t.CertFile)
	fileExists(add, "tls.key_file", t.KeyFile)
	if t.CertFile != "" && t.KeyFile == "" {
		add("tls.key_file", "is required with tls.cert_file")
	}
	if t.KeyFile != "" && t.CertFile == "" {
		add("tls.cert_file", "is required with tls.key_file")
	}
}

// problems lists every validation problem, roughly in field order.
func (c *Config) problems() []Problem {
	var ps []Problem
	add := func(path, format string, args ...any) {
		ps = append(ps, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
	}

	for i, b := range c.Brokers {
		if strings.TrimSpace(b) == "" {
			add(joinIndex("brokers", i), "is empty")
		}
	}
	c.connectionProblems(add)
	checkName(&ps, "group", "group id", c.Group)
	badGroup := len(ps) > 0 && ps[len(ps)-1].Path == "group"
	checkName(&ps, "instance_id", "instance id", c.InstanceID)
	if c.StateDir == "" {
		add("state_dir", "is required")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		add("log_level", "must be debug, info, warn or error, got %s", quote(c.LogLevel))
	}

	// Topics: where each name is used, to catch one topic in two roles.
	inputOf := make(map[string]int)  // topic -> first stream reading it
	outputOf := make(map[string]int) // topic -> first stream writing it
	for i, s := range c.Streams {
		if _, ok := inputOf[s.Input]; !ok && s.Input != "" {
			inputOf[s.Input] = i
		}
		if _, ok := outputOf[s.Output]; !ok && s.Output != "" {
			outputOf[s.Output] = i
		}
	}
	checkName(&ps, "audit_topic", "topic name", c.AuditTopic)
	if i, ok := inputOf[c.AuditTopic]; ok {
		add("audit_topic", "%s is the input of streams[%d]", quote(c.AuditTopic), i)
	} else if i, ok := outputOf[c.AuditTopic]; ok {
		add("audit_topic", "%s is the output of streams[%d]", quote(c.AuditTopic), i)
	}
	// A changelog topic named after an invalid group is reported once, at
	// group.
	if !badGroup || c.ChangelogTopic != c.Group+changelogSuffix {
		checkName(&ps, "changelog_topic", "topic name", c.ChangelogTopic)
	}
	if i, ok := inputOf[c.ChangelogTopic]; ok {
		add("changelog_topic", "%s is the input of streams[%d]", quote(c.ChangelogTopic), i)
	} else if i, ok := outputOf[c.ChangelogTopic]; ok {
		add("changelog_topic", "%s is the output of streams[%d]", quote(c.ChangelogTopic), i)
	} else if c.ChangelogTopic != "" && c.ChangelogTopic == c.AuditTopic {
		add("changelog_topic", "%s is also the audit_topic", quote(c.ChangelogTopic))
	}

	switch c.Guarantee {
	case ExactlyOnce, AtLeastOnce:
	default:
		add("guarantee", "must be %s or %s, got %s", ExactlyOnce, AtLeastOnce, quote(c.Guarantee))
	}
	if c.CommitInterval <= 0 {
		add("commit_interval", "must be greater than 0")
	}
	if c.AdminAddr != "" {
		if _, port, err := net.SplitHostPort(c.AdminAddr); err != nil {
			add("admin_addr", "want host:port (e.g. 127.0.0.1:8080 or :8080), got %s", quote(c.AdminAddr))
		} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			add("admin_addr", "invalid port %s", quote(port))
		}
	}
	switch {
	case c.AdminToken != "" && c.AdminTokenFile != "":
		add("admin_token_file", "set admin_token or admin_token_file, not both")
	default:
		fileExists(add, "admin_token_file", c.AdminTokenFile)
	}
	if (c.AdminTLS.CertFile == "") != (c.AdminTLS.KeyFile == "") {
		add("admin_tls", "cert_file and key_file go together: set both or neither")
	}
	fileExists(add, "admin_tls.cert_file", c.AdminTLS.CertFile)
	fileExists(add, "admin_tls.key_file", c.AdminTLS.KeyFile)
	fileExists(add, "admin_tls.ca_file", c.AdminTLS.CAFile)
	if c.State.CacheSize <= 0 {
		add("state.cache_size", "must be greater than 0")
	}
	if c.State.MemtableSize <= 0 {
		add("state.memtable_size", "must be greater than 0")
	}
	if c.State.MinFreeSpace != nil && *c.State.MinFreeSpace < 0 {
		add("state.min_free_space", "must not be negative")
	}
	if c.State.Memory < minMemory {
		add("state.memory", "must be at least 128MiB")
	}

	if len(c.Streams) == 0 {
		add("streams", "at least one stream is required")
	}
	names := make(map[string]bool)
	for i, s := range c.Streams {
		p := joinIndex("streams", i)
		at := func(field string) string { return joinField(p, field) }

		switch {
		case s.Name == "":
			add(at("name"), "is required")
		case names[s.Name]:
			add(at("name"), "duplicate stream name %s", quote(s.Name))
		default:
			names[s.Name] = true
		}

		checkName(&ps, at("input"), "topic name", s.Input)
		if j := inputOf[s.Input]; s.Input != "" && j != i {
			add(at("input"), "%s is already the input of streams[%d]", quote(s.Input), j)
		}

		checkName(&ps, at("output"), "topic name", s.Output)
		if j, ok := inputOf[s.Output]; ok {
			add(at("output"), "%s is the input of streams[%d]", quote(s.Output), j)
		} else if j := outputOf[s.Output]; s.Output != "" && j != i {
			add(at("output"), "%s is already the output of streams[%d]", quote(s.Output), j)
		}
		switch rt := s.RepartitionTopic; {
		case !s.Repartition && rt != "":
			add(at("repartition_topic"), "is set but repartition is false")
		case !s.Repartition:
		case rt == c.AuditTopic || rt == c.ChangelogTopic:
			add(at("repartition_topic"), "%s is also the audit or changelog topic", quote(rt))
		default:
			checkName(&ps, at("repartition_topic"), "topic name", rt)
			if j, ok := inputOf[rt]; ok {
				add(at("repartition_topic"), "%s is the input of streams[%d]", quote(rt), j)
			} else if j, ok := outputOf[rt]; ok {
				add(at("repartition_topic"), "%s is the output of streams[%d]", quote(rt), j)
			}
			for j := 0; j < i; j++ {
				if c.Streams[j].Repartition && c.Streams[j].RepartitionTopic == rt {
					add(at("repartition_topic"), "%s is already the repartition topic of streams[%d]", quote(rt), j)
				}
			}
		}

		switch {
		case s.TTL <= 0:
			add(at("ttl"), "must be greater than 0")
		case s.TTL < Duration(time.Millisecond):
			add(at("ttl"), "must be at least 1ms (record timestamps are in milliseconds)")
		}
		switch s.TTLMode {
		case TTLFixed, TTLRefresh:
		default:
			add(at("ttl_mode"), "must be %s or %s, got %s", TTLFixed, TTLRefresh, quote(s.TTLMode))
		}
		if s.Lateness != nil && *s.Lateness < 0 {
			add(at("lateness"), "must not be negative")
		}

		if len(s.Key) == 0 {
			add(at("key"), "at least one source is required")
		}
		for j, k := range s.Key {
			kp := joinIndex(at("key"), j)
			n := 0
			if k.Header != "" {
				n++
			}
			if k.JSON != "" {
				n++
				checkJSONPath(&ps, joinField(kp, "json"), k.JSON)
			}
			if fp := k.Fingerprint; fp != nil {
				n++
				fpp := joinField(kp, "fingerprint")
				switch {
				case fp.Whole && len(fp.Fields) > 0:
					add(fpp, `want a list of JSON fields or "value", not both`)
				case !fp.Whole && len(fp.Fields) == 0:
					add(fpp, "at least one field is required")
				}
				for f, field := range fp.Fields {
					checkJSONPath(&ps, joinIndex(fpp, f), field)
				}
			}
			if n != 1 {
				add(kp, "exactly one of header, json, fingerprint is required")
			}
		}

		for j, part := range s.Scope {
			pp := joinIndex(at("scope"), j)
			switch {
			case part.Header != "" && part.JSON != "":
				add(pp, "want header:NAME or json:PATH, not both")
			case part.JSON != "":
				checkJSONPath(&ps, pp, part.JSON)
			case part.Header == "":
				add(pp, "want header:NAME or json:PATH, got nothing")
			}
		}

		if s.KeyMaxLength < 0 {
			add(at("key_max_length"), "must not be negative")
		}
		switch s.KeyFormat {
		case KeyFormatAny, KeyFormatUUID:
		default:
			add(at("key_format"), "must be %s or %s, got %s", KeyFormatAny, KeyFormatUUID, quote(s.KeyFormat))
		}
		for j, f := range s.Compare {
			checkJSONPath(&ps, joinIndex(at("compare"), j), f)
		}
	}
	return ps
}
