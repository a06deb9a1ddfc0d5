package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The files of testdata/ drive TestTestdata:
//
//   - NAME.good.yaml must load and validate; TestGoodFiles checks some of
//     the values loaded.
//   - NAME.bad.yaml must fail to load; its sibling NAME.bad.yaml.err holds
//     the exact text of the error (without a trailing newline).
//
// Run `go test ./config -run TestTestdata -update` to rewrite the .err files
// from the current output, then review the diff.
var update = flag.Bool("update", false, "rewrite testdata/*.bad.yaml.err from the current errors")

func hostname(t *testing.T) string {
	t.Helper()
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "kdedup-1"
	}
	return h
}

func TestTestdata(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	for _, file := range files {
		name := filepath.Base(file)
		// Use a slash path: it appears in syntax error messages.
		file := "testdata/" + name
		switch {
		case strings.HasSuffix(name, ".good.yaml"):
			t.Run(name, func(t *testing.T) {
				c, err := Load(LoadOptions{File: file})
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if err := c.Validate(); err != nil {
					t.Fatalf("Validate after Load: %v", err)
				}
				roundTrip(t, c)
			})
		case strings.HasSuffix(name, ".bad.yaml"):
			t.Run(name, func(t *testing.T) {
				c, err := Load(LoadOptions{File: file})
				if err == nil {
					t.Fatalf("Load succeeded: %+v", c)
				}
				if c != nil {
					t.Errorf("Load returned a config with its error")
				}
				var cerr *Error
				if !errors.As(err, &cerr) || len(cerr.Problems) == 0 {
					t.Fatalf("Load error is not an *Error with problems: %T %v", err, err)
				}
				got := err.Error()
				if *update {
					if err := os.WriteFile(file+".err", []byte(got+"\n"), 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				want, err := os.ReadFile(file + ".err")
				if err != nil {
					t.Fatalf("missing expected error: %v", err)
				}
				if w := strings.TrimRight(string(want), "\n"); got != w {
					t.Errorf("error text differs\n--- got:\n%s\n--- want:\n%s", got, w)
				}
			})
		default:
			t.Errorf("%s: want NAME.good.yaml or NAME.bad.yaml", name)
		}
	}
}

// roundTrip checks that c, written as YAML and loaded again, is unchanged.
func roundTrip(t *testing.T, c *Config) {
	t.Helper()
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	c2, err := loadBytes("marshalled", out, LoadOptions{})
	if err != nil {
		t.Fatalf("loading the marshalled config: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(c, c2) {
		t.Fatalf("round trip changed the config\nbefore: %+v\nafter:  %+v\nYAML:\n%s", c, c2, out)
	}
}

func mustLoad(t *testing.T, opts LoadOptions) *Config {
	t.Helper()
	c, err := Load(opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c
}

func TestGoodFiles(t *testing.T) {
	t.Run("example", func(t *testing.T) {
		c := mustLoad(t, LoadOptions{File: "testdata/example.good.yaml"})
		want := &Config{
			Brokers:        []string{"127.0.0.1:9092"},
			Group:          "kdedup",
			InstanceID:     "host-1",
			StateDir:       "./data",
			AuditTopic:     "dedup.audit",
			ChangelogTopic: "kdedup.changelog",
			Changelog:      boolPtr(true),
			Guarantee:      ExactlyOnce,
			CommitInterval: Duration(100 * time.Millisecond),
			AdminAddr:      "127.0.0.1:8080",
			LogLevel:       "info",
			State:          StateOptions{CacheSize: 64 << 20, MemtableSize: 16 << 20, MinFreeSpace: sizePtr(256 << 20), Memory: 1 << 30},
			Streams: []Stream{
				{
					Name:     "push",
					Input:    "push-events",
					Output:   "push-events.deduped",
					TTL:      Duration(time.Hour),
					TTLMode:  TTLFixed,
					Lateness: durationPtr(time.Hour),
					Key: []KeySource{
						{Header: "Idempotency-Key"},
						{JSON: "data.resubmitCheckKey"},
						{Fingerprint: &Fingerprint{Fields: []string{"user_id", "template_id", "body"}}},
					},
					Scope:        []ScopePart{{Header: "tenant-id"}},
					KeyMaxLength: 64,
					KeyFormat:    KeyFormatAny,
				},
				{
					Name:      "order",
					Input:     "order-events",
					Output:    "order-events.deduped",
					TTL:       Duration(8 * time.Hour),
					TTLMode:   TTLFixed,
					Lateness:  durationPtr(8 * time.Hour),
					Key:       []KeySource{{Header: "X-Client-Token"}, {JSON: "order_id"}},
					Scope:     []ScopePart{{JSON: "tenant_id"}},
					KeyFormat: KeyFormatUUID,
				},
			},
		}
		if !reflect.DeepEqual(c, want) {
			t.Errorf("got  %+v\nwant %+v", c, want)
		}
	})

	t.Run("minimal has every default", func(t *testing.T) {
		c := mustLoad(t, LoadOptions{File: "testdata/minimal.good.yaml"})
		want := &Config{
			Brokers:        nil, // the embedded broker
			Group:          "kdedup",
			InstanceID:     hostname(t),
			StateDir:       "./data",
			AuditTopic:     "dedup.audit",
			ChangelogTopic: "kdedup.changelog",
			Changelog:      boolPtr(true),
			Guarantee:      "exactly_once",
			CommitInterval: Duration(100 * time.Millisecond),
			AdminAddr:      "", // disabled
			LogLevel:       "info",
			State:          StateOptions{CacheSize: 64 << 20, MemtableSize: 16 << 20, MinFreeSpace: sizePtr(256 << 20), Memory: 1 << 30},
			Streams: []Stream{{
				Name:         "push",
				Input:        "push-events",
				Output:       "push-events.deduped",
				TTL:          Duration(time.Hour),
				TTLMode:      "fixed",
				Lateness:     durationPtr(time.Hour),
				Key:          []KeySource{{Header: "Idempotency-Key"}},
				Scope:        nil,
				KeyMaxLength: 0,
				KeyFormat:    "any",
				Compare:      nil,
			}},
		}
		if !reflect.DeepEqual(c, want) {
			t.Errorf("got  %+v\nwant %+v", c, want)
		}
	})

	t.Run("security", func(t *testing.T) {
		c := mustLoad(t, LoadOptions{File: "testdata/security.good.yaml", Env: []string{"KDEDUP_SASL_USERNAME=from-env"}})
		want := SASL{Mechanism: SASLScramSHA512, Username: "from-env", PasswordFile: "testdata/secrets/password"}
		if c.SASL != want {
			t.Errorf("sasl = %+v, want %+v", c.SASL, want)
		}
		if !c.TLS.On() || c.TLS.Enabled || c.TLS.ServerName != "kafka.example.com" {
			t.Errorf("tls = %+v: want it on through ca_file and server_name", c.TLS)
		}
		// The password from the environment, where it belongs; it never
		// shows when the configuration is printed.
		c = mustLoad(t, LoadOptions{File: "testdata/security.good.yaml", Env: []string{"KDEDUP_SASL_PASSWORD=hunter2"},
			Overrides: []Override{{Path: "sasl.password_file", Value: ""}}})
		if c.SASL.Password.Reveal() != "hunter2" {
			t.Fatalf("password %q, want the environment's", c.SASL.Password.Reveal())
		}
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), "hunter2") || !strings.Contains(string(out), "password: '[redacted]'") {
			t.Errorf("printed configuration:\n%s", out)
		}
		if s := fmt.Sprintf("%v %+v %s", c.SASL.Password, c.SASL, c.SASL.Password); strings.Contains(s, "hunter2") {
			t.Errorf("formatted: %s", s)
		}
	})

	t.Run("admin", func(t *testing.T) {
		c := mustLoad(t, LoadOptions{File: "testdata/admin.good.yaml"})
		if tok, err := c.ReadAdminToken(); err != nil || tok != "s3cret-admin-token" {
			t.Errorf("token from admin_token_file = %q, %v", tok, err)
		}
		if !c.AdminTLS.On() {
			t.Errorf("admin_tls = %+v: want it on", c.AdminTLS)
		}
		c = mustLoad(t, LoadOptions{File: "testdata/admin.good.yaml", Env: []string{"KDEDUP_ADMIN_TOKEN=from-env"},
			Overrides: []Override{{Path: "admin_token_file", Value: ""}}})
		if tok, err := c.ReadAdminToken(); err != nil || tok != "from-env" {
			t.Errorf("token from KDEDUP_ADMIN_TOKEN = %q, %v", tok, err)
		}
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), "from-env") {
			t.Errorf("printed configuration shows the token:\n%s", out)
		}
	})

	t.Run("repartition", func(t *testing.T) {
		c := mustLoad(t, LoadOptions{File: "testdata/repartition.good.yaml"})
		if got := c.Streams[0].RepartitionTopic; got != "billing.push.repartition" {
			t.Errorf("default repartition_topic %q", got)
		}
		if got := c.Streams[1].RepartitionTopic; got != "orders-by-id" {
			t.Errorf("repartition_topic %q", got)
		}
	})

	t.Run("lateness-zero", func(t *testing.T) {
		c := mustLoad(t, LoadOptions{File: "testdata/lateness-zero.good.yaml"})
		if l := c.Streams[0].Lateness; l == nil || *l != 0 {
			t.Errorf("lateness = %v, want an explicit 0", l)
		}
	})

	t.Run("changelog", func(t *testing.T) {
		c := mustLoad(t, LoadOptions{File: "testdata/changelog-off.good.yaml"})
		if c.Changelog == nil || *c.Changelog {
			t.Errorf("changelog = %v, want an explicit false", c.Changelog)
		}
		c = mustLoad(t, LoadOptions{File: "testdata/minimal.good.yaml"})
		if c.Changelog == nil || !*c.Changelog {
			t.Errorf("changelog = %v, want the default true", c.Changelog)
		}
		c = mustLoad(t, LoadOptions{File: "testdata/minimal.good.yaml", Env: []string{"KDEDUP_CHANGELOG=false"}})
		if c.Changelog == nil || *c.Changelog {
			t.Errorf("KDEDUP_CHANGELOG=false: changelog = %v, want false", c.Changelog)
		}
	})

	t.Run("forms", func(t *testing.T) {
		c := mustLoad(t, LoadOptions{File: "testdata/forms.good.yaml"})
		if got, want := c.Brokers, []string{"a:9092", "b:9092"}; !reflect.DeepEqual(got, want) {
			t.Errorf("brokers = %q, want %q", got, want)
		}
		if c.ChangelogTopic != "billing.changelog" {
			t.Errorf("changelog_topic = %q, want the group's", c.ChangelogTopic)
		}
		if c.Guarantee != AtLeastOnce || c.CommitInterval != Duration(250*time.Millisecond) || c.AdminAddr != "" {
			t.Errorf("guarantee, commit_interval, admin_addr = %q, %v, %q", c.Guarantee, c.CommitInterval, c.AdminAddr)
		}
		if c.State.CacheSize != 1<<30 || c.State.MemtableSize != 8_000_000 || c.State.Memory != 4<<30 {
			t.Errorf("state = %+v", c.State)
		}
		if len(c.Streams) != 3 {
			t.Fatalf("%d streams, want 3", len(c.Streams))
		}
		inv, ref, cred := c.Streams[0], c.Streams[1], c.Streams[2]
		if !reflect.DeepEqual(inv.Key, []KeySource{{Fingerprint: &Fingerprint{Whole: true}}}) {
			t.Errorf("invoices key = %+v, want fingerprint of the whole value", inv.Key)
		}
		if want := []ScopePart{{Header: "tenant-id"}, {JSON: "account.id"}}; !reflect.DeepEqual(inv.Scope, want) {
			t.Errorf("invoices scope = %+v, want %+v", inv.Scope, want)
		}
		if inv.TTLMode != TTLRefresh || *inv.Lateness != Duration(2*time.Hour) {
			t.Errorf("invoices ttl_mode, lateness = %q, %v", inv.TTLMode, inv.Lateness)
		}
		if want := []string{"amount", "lines.0.price"}; !reflect.DeepEqual(inv.Compare, want) {
			t.Errorf("invoices compare = %q", inv.Compare)
		}
		// refunds merges invoices (<<) and overrides some fields.
		if ref.Name != "refunds" || ref.Input != "refunds" || ref.Output != "refunds-clean" || ref.TTL != Duration(48*time.Hour) {
			t.Errorf("refunds own fields: %+v", ref)
		}
		if ref.TTLMode != TTLRefresh || *ref.Lateness != Duration(2*time.Hour) || !reflect.DeepEqual(ref.Scope, inv.Scope) || !reflect.DeepEqual(ref.Compare, inv.Compare) {
			t.Errorf("refunds merged fields: %+v", ref)
		}
		wantKey := []KeySource{{JSON: "refund.id"}, {Fingerprint: &Fingerprint{Fields: []string{"account.id", "amount"}}}}
		if !reflect.DeepEqual(ref.Key, wantKey) || ref.KeyMaxLength != 128 {
			t.Errorf("refunds key = %+v, max %d", ref.Key, ref.KeyMaxLength)
		}
		if cred.Output != "credits.deduped" || !reflect.DeepEqual(cred.Key, inv.Key) || *cred.Lateness != cred.TTL {
			t.Errorf("credits = %+v", cred)
		}
	})
}

func TestLoadNoFile(t *testing.T) {
	_, err := Load(LoadOptions{})
	if err == nil || err.Error() != "streams: at least one stream is required" {
		t.Fatalf("Load with nothing: %v", err)
	}
	_, err = Load(LoadOptions{File: "testdata/does-not-exist.yaml"})
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load of a missing file: %v, want os.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), "testdata/does-not-exist.yaml") {
		t.Errorf("error %q does not name the file", err)
	}
}

func TestValidateWithoutDefaults(t *testing.T) {
	err := (&Config{Streams: []Stream{{}}}).Validate()
	want := strings.Join([]string{
		"group: is required",
		"instance_id: is required",
		"state_dir: is required",
		"audit_topic: is required",
		"changelog_topic: is required",
		`guarantee: must be exactly_once or at_least_once, got ""`,
		"commit_interval: must be greater than 0",
		`log_level: must be debug, info, warn or error, got ""`,
		"state.cache_size: must be greater than 0",
		"state.memtable_size: must be greater than 0",
		"state.memory: must be at least 128MiB",
		"streams[0].name: is required",
		"streams[0].input: is required",
		"streams[0].output: is required",
		"streams[0].ttl: must be greater than 0",
		`streams[0].ttl_mode: must be fixed or refresh, got ""`,
		"streams[0].key: at least one source is required",
		`streams[0].key_format: must be any or uuid, got ""`,
	}, "\n")
	if err == nil || err.Error() != want {
		t.Errorf("got:\n%v\nwant:\n%s", err, want)
	}
}

func TestEnsureDefaultsIdempotent(t *testing.T) {
	c := mustLoad(t, LoadOptions{File: "testdata/forms.good.yaml"})
	before := *c
	before.Streams = append([]Stream(nil), c.Streams...)
	c.EnsureDefaults()
	if !reflect.DeepEqual(&before, c) {
		t.Errorf("EnsureDefaults changed a loaded config")
	}
}

func TestProblemsSortedInFieldOrder(t *testing.T) {
	ps := []Problem{
		{Path: "streams[1].name", Msg: "e"},
		{Path: "streams[0].zzz", Msg: "unknown"},
		{Path: "streams[0].key[0].json", Msg: "d"},
		{Path: "streams[0].ttl", Msg: "c"},
		{Path: "guarantee", Msg: "b"},
		{Path: "brokers", Msg: "a"},
		{Path: "streams[10].name", Msg: "f"},
		{Path: "", Msg: "root"},
		{Path: "guarantee", Msg: "b2", Var: "KDEDUP_GUARANTEE"},
	}
	sortProblems(ps)
	var got []string
	for _, p := range ps {
		got = append(got, p.Msg)
	}
	want := []string{"root", "a", "b", "b2", "c", "d", "unknown", "e", "f"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("order %q, want %q", got, want)
	}
}

func TestPathSetRelated(t *testing.T) {
	s := newPathSet([]Problem{{Path: "streams[1].key[0].jsn"}, {Path: "guarantee"}})
	for path, want := range map[string]bool{
		"streams[1].key[0].jsn":   true,  // itself
		"streams[1].key[0]":       true,  // contains it
		"streams[1]":              true,  // contains it
		"streams":                 true,  // contains it
		"streams[1].key[0].jsn.x": true,  // inside it
		"guarantee":               true,  // itself
		"streams[1].key[1]":       false, // a sibling
		"streams[1].key[0].json":  false, // a sibling
		"streams[10].key[0].jsn":  false, // not a prefix at a boundary
		"group":                   false,
		"guarantee_not":           false,
	} {
		if got := s.related(path); got != want {
			t.Errorf("related(%q) = %v, want %v", path, got, want)
		}
	}
	if !newPathSet([]Problem{{Path: ""}}).related("streams[0].ttl") {
		t.Errorf("a problem with the whole file is not related to every path")
	}
}

func TestByteSize(t *testing.T) {
	good := []struct {
		in   string
		want ByteSize
		out  string
	}{
		{"0", 0, "0"},
		{"1048576", 1 << 20, "1MiB"},
		{"1000", 1000, "1KB"},
		{"1500", 1500, "1500"},
		{"64MiB", 64 << 20, "64MiB"},
		{"64 MiB", 64 << 20, "64MiB"},
		{"500MB", 500_000_000, "500MB"},
		{"2GB", 2_000_000_000, "2GB"},
		{"3GiB", 3 << 30, "3GiB"},
		{"4KiB", 4096, "4KiB"},
		{"7KB", 7000, "7KB"},
		{"1TiB", 1 << 40, "1TiB"},
		{"12B", 12, "12"},
		{"-1MiB", -1 << 20, "-1MiB"},
	}
	for _, tc := range good {
		t.Run(tc.in, func(t *testing.T) {
			var s ByteSize
			if err := s.UnmarshalText([]byte(tc.in)); err != nil {
				t.Fatal(err)
			}
			if s != tc.want {
				t.Fatalf("got %d, want %d", s, tc.want)
			}
			out, _ := s.MarshalText()
			if string(out) != tc.out {
				t.Errorf("MarshalText = %q, want %q", out, tc.out)
			}
			var back ByteSize
			if err := back.UnmarshalText(out); err != nil || back != s {
				t.Errorf("round trip: %d, %v", back, err)
			}
		})
	}
	bad := map[string]string{
		"":                     `invalid size "" (want e.g. 1048576, 500MB or 64MiB)`,
		"MiB":                  `invalid size "MiB" (want e.g. 1048576, 500MB or 64MiB)`,
		"1.5GiB":               `invalid size "1.5GiB": unknown unit ".5GiB" (want B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)`,
		"64mb":                 `invalid size "64mb": unknown unit "mb" (want B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)`,
		"99999999999999999999": `invalid size "99999999999999999999": too large`,
		"9000000000TiB":        `invalid size "9000000000TiB": too large`,
		"-":                    `invalid size "-" (want e.g. 1048576, 500MB or 64MiB)`,
	}
	for in, want := range bad {
		t.Run("bad "+in, func(t *testing.T) {
			var s ByteSize
			err := s.UnmarshalText([]byte(in))
			if err == nil || err.Error() != want {
				t.Errorf("got %v, want %s", err, want)
			}
		})
	}
}

func TestFingerprintYAML(t *testing.T) {
	// Fingerprint also works with plain yaml.Unmarshal and yaml.Marshal.
	for _, tc := range []struct {
		in   string
		want KeySource
	}{
		{"fingerprint: value", KeySource{Fingerprint: &Fingerprint{Whole: true}}},
		{"fingerprint: [a, b.c]", KeySource{Fingerprint: &Fingerprint{Fields: []string{"a", "b.c"}}}},
	} {
		var k KeySource
		if err := yaml.Unmarshal([]byte(tc.in), &k); err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if !reflect.DeepEqual(k, tc.want) {
			t.Errorf("%s: got %+v", tc.in, k)
		}
		out, err := yaml.Marshal(k.Fingerprint)
		if err != nil {
			t.Fatal(err)
		}
		var back Fingerprint
		if err := yaml.Unmarshal(out, &back); err != nil || !reflect.DeepEqual(&back, tc.want.Fingerprint) {
			t.Errorf("%s: marshalled as %q, read back %+v, %v", tc.in, out, back, err)
		}
	}
	var k KeySource
	err := yaml.Unmarshal([]byte("fingerprint: body"), &k)
	if err == nil || !strings.Contains(err.Error(), `fingerprint: want a list of JSON fields or "value", got "body"`) {
		t.Errorf("fingerprint: body: %v", err)
	}
}

func TestEnvName(t *testing.T) {
	for path, want := range map[string]string{
		"brokers":                        "KDEDUP_BROKERS",
		"state.cache_size":               "KDEDUP_STATE_CACHE_SIZE",
		"streams[0].ttl":                 "KDEDUP_STREAMS_0_TTL",
		"streams[12].key[1].fingerprint": "KDEDUP_STREAMS_12_KEY_1_FINGERPRINT",
		"streams[0]":                     "KDEDUP_STREAMS_0",
		"streams[N].key_max_length":      "KDEDUP_STREAMS_N_KEY_MAX_LENGTH",
	} {
		if got := EnvName(path); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestPaths(t *testing.T) {
	paths := Paths()
	for _, want := range []string{"brokers", "state.cache_size", "streams", "streams[N]", "streams[N].ttl", "streams[N].key[N].fingerprint", "streams[N].compare"} {
		found := false
		for _, p := range paths {
			found = found || p == want
		}
		if !found {
			t.Errorf("Paths() lacks %q: %q", want, paths)
		}
	}
	for _, p := range paths {
		if strings.Contains(p, "ignored") || strings.Contains(p, "fields") || strings.Contains(p, "scope[") {
			t.Errorf("Paths() has %q", p)
		}
	}
	if paths[0] != "brokers" {
		t.Errorf("Paths() not in field order: %q", paths)
	}
}

func TestParseOverride(t *testing.T) {
	o, err := ParseOverride("streams[0].ttl=2h")
	if err != nil || o != (Override{Path: "streams[0].ttl", Value: "2h"}) {
		t.Errorf("got %+v, %v", o, err)
	}
	o, err = ParseOverride("admin_addr=")
	if err != nil || o != (Override{Path: "admin_addr"}) {
		t.Errorf("got %+v, %v", o, err)
	}
	for _, bad := range []string{"ttl", "=x", "streams[x].ttl=1h", "a..b=1"} {
		if _, err := ParseOverride(bad); err == nil {
			t.Errorf("ParseOverride(%q) succeeded", bad)
		}
	}
}

func durationPtr(d time.Duration) *Duration { c := Duration(d); return &c }

func boolPtr(b bool) *bool { return &b }

func sizePtr(b ByteSize) *ByteSize { return &b }
