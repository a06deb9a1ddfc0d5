package config

import (
	"flag"
	"fmt"
	"strings"
)

// Flags binds the configuration's command-line flags to a flag.FlagSet:
// --config FILE, --set PATH=VALUE (repeatable, any field), and one flag per
// top-level scalar field, named as in YAML with "-" for "_" (--brokers,
// --group, --instance-id, --state-dir, --audit-topic, --changelog-topic,
// --guarantee, --commit-interval, --admin-addr). Flags override the
// environment and the file, in the order given.
type Flags struct {
	File      string
	overrides []Override
}

// topFlags are the top-level fields that get flags of their own.
var topFlags = []string{"brokers", "group", "instance_id", "state_dir", "audit_topic", "changelog_topic", "guarantee", "commit_interval", "admin_addr"}

// BindFlags registers the configuration flags on fs.
func BindFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{}
	fs.StringVar(&f.File, "config", "", "configuration `FILE` (YAML); fields may also come from KDEDUP_* environment variables and flags")
	fs.Func("set", "set a configuration field: `PATH=VALUE`, e.g. streams[0].ttl=2h (repeatable)", func(s string) error {
		o, err := ParseOverride(s)
		if err != nil {
			return err
		}
		f.overrides = append(f.overrides, o)
		return nil
	})
	for _, path := range topFlags {
		fs.Func(strings.ReplaceAll(path, "_", "-"), fmt.Sprintf("set %s (overrides the file and %s)", path, EnvName(path)), func(s string) error {
			f.overrides = append(f.overrides, Override{Path: path, Value: s})
			return nil
		})
	}
	return f
}

// Options returns the LoadOptions of the parsed flags and env (KEY=VALUE,
// as os.Environ returns).
func (f *Flags) Options(env []string) LoadOptions {
	return LoadOptions{File: f.File, Env: env, Overrides: f.overrides}
}
