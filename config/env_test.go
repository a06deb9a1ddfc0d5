package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// oneStream is a valid configuration file with one stream.
const oneStream = `
streams:
  - name: push
    input: push-events
    ttl: 1h
    key: [{header: Idempotency-Key}]
`

// twoStreams is a valid configuration file with two streams.
const twoStreams = oneStream + `
  - name: order
    input: order-events
    ttl: 8h
    key: [{json: order_id}]
`

func load(t *testing.T, file string, env []string, overrides ...Override) (*Config, error) {
	t.Helper()
	return loadBytes("config.yaml", []byte(file), LoadOptions{Env: env, Overrides: overrides})
}

func TestEnv(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		env   []string
		check func(t *testing.T, c *Config)
	}{
		{
			name: "brokers comma-separated",
			file: oneStream,
			env:  []string{"KDEDUP_BROKERS=a:9092,b:9092"},
			check: func(t *testing.T, c *Config) {
				if want := []string{"a:9092", "b:9092"}; !reflect.DeepEqual(c.Brokers, want) {
					t.Errorf("brokers = %q, want %q", c.Brokers, want)
				}
			},
		},
		{
			name: "brokers as a YAML flow list, spaces trimmed",
			file: "brokers: [x:1]\n" + oneStream,
			env:  []string{"KDEDUP_BROKERS=[ a:9092 , 'b:9092' ]"},
			check: func(t *testing.T, c *Config) {
				if want := []string{"a:9092", "b:9092"}; !reflect.DeepEqual(c.Brokers, want) {
					t.Errorf("brokers = %q, want %q", c.Brokers, want)
				}
			},
		},
		{
			name: "empty value resets to the default",
			file: "brokers: [x:1]\nadmin_addr: :8080\ncommit_interval: 1s\n" + oneStream,
			env:  []string{"KDEDUP_BROKERS=", "KDEDUP_ADMIN_ADDR=", "KDEDUP_COMMIT_INTERVAL="},
			check: func(t *testing.T, c *Config) {
				if c.Brokers != nil || c.AdminAddr != "" || c.CommitInterval != Duration(100*time.Millisecond) {
					t.Errorf("brokers %q, admin_addr %q, commit_interval %v", c.Brokers, c.AdminAddr, c.CommitInterval)
				}
			},
		},
		{
			name: "stream element fields",
			file: twoStreams,
			env: []string{
				"KDEDUP_STREAMS_0_TTL=2h",
				"KDEDUP_STREAMS_1_KEY_MAX_LENGTH=36",
				"KDEDUP_STREAMS_1_KEY_FORMAT=uuid",
				"KDEDUP_STREAMS_0_SCOPE=header:tenant,json:account.id",
				"KDEDUP_STREAMS_0_KEY_0_HEADER=X-Key",
			},
			check: func(t *testing.T, c *Config) {
				s0, s1 := c.Streams[0], c.Streams[1]
				if s0.TTL != Duration(2*time.Hour) || *s0.Lateness != Duration(2*time.Hour) {
					t.Errorf("streams[0] ttl %v lateness %v", s0.TTL, s0.Lateness)
				}
				if want := []ScopePart{{Header: "tenant"}, {JSON: "account.id"}}; !reflect.DeepEqual(s0.Scope, want) {
					t.Errorf("streams[0].scope = %+v", s0.Scope)
				}
				if s0.Key[0].Header != "X-Key" {
					t.Errorf("streams[0].key[0].header = %q", s0.Key[0].Header)
				}
				if s1.KeyMaxLength != 36 || s1.KeyFormat != KeyFormatUUID || s1.TTL != Duration(8*time.Hour) {
					t.Errorf("streams[1] = %+v", s1)
				}
			},
		},
		{
			name: "fingerprint forms",
			file: twoStreams,
			env: []string{
				"KDEDUP_STREAMS_0_KEY=[{fingerprint: value}]",
				"KDEDUP_STREAMS_1_KEY_0_FINGERPRINT=a, b.c",
				"KDEDUP_STREAMS_1_KEY_0_JSON=",
			},
			check: func(t *testing.T, c *Config) {
				if want := []KeySource{{Fingerprint: &Fingerprint{Whole: true}}}; !reflect.DeepEqual(c.Streams[0].Key, want) {
					t.Errorf("streams[0].key = %+v", c.Streams[0].Key)
				}
				if want := []KeySource{{Fingerprint: &Fingerprint{Fields: []string{"a", "b.c"}}}}; !reflect.DeepEqual(c.Streams[1].Key, want) {
					t.Errorf("streams[1].key = %+v", c.Streams[1].Key)
				}
			},
		},
		{
			name: "KDEDUP_STREAMS replaces the list, then element variables apply to it",
			file: twoStreams,
			env: []string{
				"KDEDUP_STREAMS_0_TTL=3h",
				`KDEDUP_STREAMS=[{name: only, input: only-in, ttl: 1m, key: [{header: K}]}]`,
			},
			check: func(t *testing.T, c *Config) {
				if len(c.Streams) != 1 || c.Streams[0].Name != "only" || c.Streams[0].TTL != Duration(3*time.Hour) {
					t.Errorf("streams = %+v", c.Streams)
				}
			},
		},
		{
			name: "streams from the environment alone",
			env: []string{
				"KDEDUP_STREAMS=- {name: a, input: a-in, ttl: 1h, key: [{header: K}]}",
				"KDEDUP_STREAMS_0_OUTPUT=a-out",
			},
			check: func(t *testing.T, c *Config) {
				if len(c.Streams) != 1 || c.Streams[0].Output != "a-out" {
					t.Errorf("streams = %+v", c.Streams)
				}
			},
		},
		{
			name: "a mapping sets only its fields",
			file: "state: {cache_size: 1GiB}\n" + oneStream,
			env:  []string{"KDEDUP_STATE={memtable_size: 32MiB}", "KDEDUP_STREAMS_0={ttl: 5m}"},
			check: func(t *testing.T, c *Config) {
				if c.State.CacheSize != 1<<30 || c.State.MemtableSize != 32<<20 {
					t.Errorf("state = %+v", c.State)
				}
				if s := c.Streams[0]; s.TTL != Duration(5*time.Minute) || s.Name != "push" {
					t.Errorf("streams[0] = %+v", s)
				}
			},
		},
		{
			name: "scalar strings verbatim",
			file: oneStream,
			env:  []string{"KDEDUP_STATE_DIR=~", "KDEDUP_STREAMS_0_NAME=[not a list]", "KDEDUP_INSTANCE_ID=007"},
			check: func(t *testing.T, c *Config) {
				if c.StateDir != "~" || c.Streams[0].Name != "[not a list]" || c.InstanceID != "007" {
					t.Errorf("state_dir %q, streams[0].name %q, instance_id %q", c.StateDir, c.Streams[0].Name, c.InstanceID)
				}
			},
		},
		{
			name: "variables naming no field are ignored and listed",
			file: oneStream,
			env: []string{
				"KDEDUP_TEST_BROKERS=x:1",
				"KDEDUP_STREAMS_1_TTL=1h", // there is one stream
				"KDEDUP_STREAMS_0_TTLL=1h",
				"OTHER=1",
				"kdedup_brokers=y:1",
				"KDEDUP_GROUP=g",
			},
			check: func(t *testing.T, c *Config) {
				if want := []string{"KDEDUP_STREAMS_0_TTLL", "KDEDUP_STREAMS_1_TTL", "KDEDUP_TEST_BROKERS"}; !reflect.DeepEqual(c.Ignored, want) {
					t.Errorf("Ignored = %q, want %q", c.Ignored, want)
				}
				if c.Brokers != nil || c.Group != "g" {
					t.Errorf("brokers %q, group %q", c.Brokers, c.Group)
				}
			},
		},
		{
			name: "the last of repeated variables wins",
			file: oneStream,
			env:  []string{"KDEDUP_GROUP=a", "KDEDUP_GROUP=b"},
			check: func(t *testing.T, c *Config) {
				if c.Group != "b" || c.ChangelogTopic != "b.changelog" {
					t.Errorf("group %q changelog %q", c.Group, c.ChangelogTopic)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := load(t, tc.file, tc.env)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			tc.check(t, c)
		})
	}
}

func TestEnvAndOverrideErrors(t *testing.T) {
	tests := []struct {
		name      string
		file      string
		env       []string
		overrides []Override
		want      []string
	}{
		{
			name: "bad duration",
			file: oneStream,
			env:  []string{"KDEDUP_COMMIT_INTERVAL=x"},
			want: []string{`KDEDUP_COMMIT_INTERVAL (commit_interval): invalid duration "x"`},
		},
		{
			name: "bad values of several types",
			file: twoStreams,
			env: []string{
				"KDEDUP_STREAMS_1_KEY_MAX_LENGTH=abc",
				"KDEDUP_STREAMS_0_SCOPE=tenant",
				"KDEDUP_STATE_CACHE_SIZE=lots",
				"KDEDUP_STREAMS_0_KEY_0_FINGERPRINT=[[a]]",
			},
			want: []string{
				`KDEDUP_STATE_CACHE_SIZE (state.cache_size): invalid size "lots" (want e.g. 1048576, 500MB or 64MiB)`,
				`KDEDUP_STREAMS_0_KEY_0_FINGERPRINT (streams[0].key[0].fingerprint[0]): want a string, got a list`,
				`KDEDUP_STREAMS_0_SCOPE (streams[0].scope[0]): want header:NAME or json:PATH, got "tenant"`,
				`KDEDUP_STREAMS_1_KEY_MAX_LENGTH (streams[1].key_max_length): want an integer, got "abc"`,
			},
		},
		{
			name: "YAML values are checked like the file",
			file: oneStream,
			env: []string{
				"KDEDUP_STREAMS_0_KEY=[{header: A, jsn: b}]",
				"KDEDUP_STATE={cache_size: [1]}",
				"KDEDUP_STREAMS_0={ttl: [",
			},
			want: []string{
				`KDEDUP_STATE (state.cache_size): want a size such as "64MiB", got a list`,
				`KDEDUP_STREAMS_0 (streams[0]): invalid YAML: line 1: did not find expected node content`,
				`KDEDUP_STREAMS_0_KEY (streams[0].key[0].jsn): unknown field`,
			},
		},
		{
			name: "a bad KDEDUP_STREAMS hides the missing streams",
			env:  []string{"KDEDUP_STREAMS=name: x"},
			want: []string{`KDEDUP_STREAMS (streams): want a list, got a mapping`},
		},
		{
			name: "environment problem and validation problem",
			file: oneStream,
			env:  []string{"KDEDUP_GUARANTEE=maybe", "KDEDUP_STREAMS_0_TTL=soon"},
			want: []string{
				`guarantee: must be exactly_once or at_least_once, got "maybe"`,
				`KDEDUP_STREAMS_0_TTL (streams[0].ttl): invalid duration "soon"`,
			},
		},
		{
			name:      "override errors",
			file:      oneStream,
			overrides: []Override{{"streams[0].ttl", "x"}, {"streams[0].tll", "1h"}, {"streams[3].ttl", "1h"}, {"state.cache_size.x", "1"}, {"streams[0", "1"}, {"group[0]", "a"}},
			want: []string{
				`--set group[0]: group is not a list`,
				`--set state.cache_size.x: unknown field`,
				`--set streams[0].ttl: invalid duration "x"`,
				`--set streams[0].tll: unknown field`,
				`--set streams[3].ttl: index 3 out of range (streams has 1)`,
				// A path that does not parse sorts last.
				`--set streams[0: invalid path (want field names joined by "." with [N] list indices, e.g. streams[0].ttl)`,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := load(t, tc.file, tc.env, tc.overrides...)
			if err == nil {
				t.Fatalf("load succeeded: %+v", c)
			}
			if got, want := err.Error(), strings.Join(tc.want, "\n"); got != want {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestPrecedence(t *testing.T) {
	file := "commit_interval: 1s\ngroup: from-file\nguarantee: at_least_once\n" + oneStream
	env := []string{
		"KDEDUP_COMMIT_INTERVAL=2s",
		"KDEDUP_GROUP=from-env",
		"KDEDUP_STREAMS_0_TTL=2h",
	}
	overrides := []Override{
		{Path: "commit_interval", Value: "3s"},
		{Path: "streams[0].ttl", Value: "3h"},
		{Path: "streams[0].key", Value: "[{json: id}]"},
		{Path: "brokers", Value: "o:1,p:2"},
		{Path: "streams[0].ttl", Value: "4h"}, // the later override wins
	}
	tests := []struct {
		name           string
		env            []string
		overrides      []Override
		commitInterval time.Duration
		group          string
		ttl            time.Duration
	}{
		{"file", nil, nil, time.Second, "from-file", time.Hour},
		{"env beats file", env, nil, 2 * time.Second, "from-env", 2 * time.Hour},
		{"flags beat env and file", env, overrides, 3 * time.Second, "from-env", 4 * time.Hour},
		{"flags beat file", nil, overrides, 3 * time.Second, "from-file", 4 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := load(t, file, tc.env, tc.overrides...)
			if err != nil {
				t.Fatal(err)
			}
			if c.CommitInterval != Duration(tc.commitInterval) || c.Group != tc.group || c.Streams[0].TTL != Duration(tc.ttl) {
				t.Errorf("commit_interval %v, group %q, ttl %v; want %v, %q, %v",
					c.CommitInterval, c.Group, c.Streams[0].TTL, tc.commitInterval, tc.group, tc.ttl)
			}
			if c.Guarantee != AtLeastOnce {
				t.Errorf("guarantee %q: the file's value was lost", c.Guarantee)
			}
			if tc.overrides != nil {
				if !reflect.DeepEqual(c.Streams[0].Key, []KeySource{{JSON: "id"}}) || !reflect.DeepEqual(c.Brokers, []string{"o:1", "p:2"}) {
					t.Errorf("key %+v, brokers %q", c.Streams[0].Key, c.Brokers)
				}
			}
		})
	}
}
