package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// LoadOptions says where Load reads the configuration from.
type LoadOptions struct {
	// File is the YAML file. Default: empty, no file: the configuration
	// comes from Env and Overrides alone.
	File string
	// Env is the environment, KEY=VALUE as os.Environ returns it; only
	// variables starting with EnvPrefix are looked at. Default: nil, no
	// environment. Load never reads the process environment itself: pass
	// os.Environ() to use it.
	Env []string
	// Overrides are applied last, in order, typically from --set flags.
	// Default: none.
	Overrides []Override
}

// Override sets the field at Path to Value, as a command-line flag does
// (--set streams[0].ttl=2h). Value is read as an environment variable's
// value is (see Load).
type Override struct {
	// Path is a field path such as "commit_interval" or "streams[0].ttl".
	Path string
	// Value is the new value.
	Value string
}

// ParseOverride parses "PATH=VALUE", the argument of a --set flag.
func ParseOverride(s string) (Override, error) {
	path, value, ok := strings.Cut(s, "=")
	if !ok || path == "" {
		return Override{}, fmt.Errorf("--set %q: want PATH=VALUE, e.g. streams[0].ttl=2h", s)
	}
	if _, err := parsePath(path); err != nil {
		return Override{}, fmt.Errorf("--set %s: %w", path, err)
	}
	return Override{Path: path, Value: value}, nil
}

// Load reads the configuration in order of increasing precedence: the YAML
// file (if any), then the environment, then the overrides; it then fills in
// the defaults (EnsureDefaults) and validates the result (Validate).
//
// The file's fields are those of docs/configuration.md: an unknown field, a
// field set twice or a value of the wrong type is an error naming the
// field's path. An empty file, or one of only comments, sets nothing.
//
// Every field can also be set by an environment variable named EnvName of
// its path (KDEDUP_STREAMS_0_TTL for streams[0].ttl), and by an Override of
// its path. Their value is read according to the field's type:
//   - a string field takes the value verbatim;
//   - a list of strings (brokers, scope, compare) takes a comma-separated
//     list, or a YAML flow sequence when the value starts with "[";
//   - a fingerprint takes "value", a comma-separated list of fields, or a
//     YAML flow sequence;
//   - a number, duration or size is written as in YAML;
//   - anything else (state, streams, streams[N], streams[N].key, ...) takes
//     a YAML value, checked as the file is. A mapping sets only the fields it
//     names; a list replaces the whole list;
//   - an empty value resets the field to its zero value, so its default
//     applies.
//
// Variables of list elements (KDEDUP_STREAMS_0_...) apply to elements that
// exist; KDEDUP_STREAMS, if set, replaces the list first. Variables that
// name no field are not an error: their names are returned in
// Config.Ignored.
//
// Load reports every problem it finds, not just the first: the error is
// then an *Error. Validation problems at a path that already had a problem
// reading its value are left out, as they would only repeat it. Failing to
// read File returns an error wrapping the os error.
func Load(opts LoadOptions) (*Config, error) {
	var data []byte
	if opts.File != "" {
		var err error
		data, err = os.ReadFile(opts.File)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	return loadBytes(opts.File, data, opts)
}

// loadBytes is Load with the file's content given: name is only used in
// messages. opts.File is ignored.
func loadBytes(name string, data []byte, opts LoadOptions) (*Config, error) {
	c := &Config{}
	var ps []Problem
	ps = append(ps, decodeFile(name, data, c)...)
	envProblems, ignored := applyEnv(c, opts.Env)
	ps = append(ps, envProblems...)
	for _, o := range opts.Overrides {
		for _, p := range setPath(c, o.Path, o.Value) {
			p.Flag = true
			ps = append(ps, p)
		}
	}
	c.EnsureDefaults()
	c.Ignored = ignored
	seen := newPathSet(ps)
	for _, v := range c.problems() {
		if !seen.related(v.Path) {
			ps = append(ps, v)
		}
	}
	if err := errorOf(ps); err != nil {
		return nil, err
	}
	return c, nil
}

// pathSet is the paths of some problems, for finding the paths related to
// one of them (see related) in time linear in the path's length.
type pathSet struct {
	paths     map[string]bool // the problems' paths
	ancestors map[string]bool // the paths that contain one of them
}

func newPathSet(ps []Problem) pathSet {
	s := pathSet{paths: make(map[string]bool), ancestors: make(map[string]bool)}
	for _, p := range ps {
		s.paths[p.Path] = true
		for _, a := range ancestors(p.Path) {
			s.ancestors[a] = true
		}
	}
	return s
}

// related reports whether path is, contains or lies inside one of the set.
func (s pathSet) related(path string) bool {
	if s.paths[path] || s.ancestors[path] {
		return true
	}
	for _, a := range ancestors(path) {
		if s.paths[a] {
			return true
		}
	}
	return false
}

// ancestors lists the paths that contain path: for "streams[0].ttl",
// "", "streams" and "streams[0]".
func ancestors(path string) []string {
	if path == "" {
		return nil
	}
	out := []string{""}
	for i := 1; i < len(path); i++ {
		if path[i] == '.' || path[i] == '[' {
			out = append(out, path[:i])
		}
	}
	return out
}

// decodeFile decodes the YAML file data into c.
func decodeFile(name string, data []byte, c *Config) []Problem {
	if name == "" {
		name = "config"
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := parseYAML(dec, &root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return []Problem{{Msg: syntaxMsg(name, err)}}
	}
	var next yaml.Node
	if err := parseYAML(dec, &next); !errors.Is(err, io.EOF) {
		if err != nil {
			return []Problem{{Msg: syntaxMsg(name, err)}}
		}
		return []Problem{{Msg: fmt.Sprintf("%s:%d: want one YAML document, found another", name, next.Line)}}
	}
	top := &root
	if top.Kind == yaml.DocumentNode && len(top.Content) == 1 {
		top = top.Content[0]
	}
	if top.Kind != yaml.MappingNode && !isNull(top) {
		return []Problem{{Msg: fmt.Sprintf("%s:%d: want a mapping of configuration fields, got %s", name, top.Line, describe(top))}}
	}
	d := &decoder{}
	d.decode(&root, reflect.ValueOf(c).Elem(), "")
	for i, p := range d.problems {
		if p.Path == "" {
			d.problems[i].Msg = name + ": " + p.Msg
		}
	}
	return d.problems
}

// parseYAML parses the next document. The parser is not expected to panic,
// but a configuration loader must not take the process down on any input,
// so a panic is returned as an error.
func parseYAML(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: parser failed: %v", r)
		}
	}()
	return dec.Decode(n)
}

var yamlLine = regexp.MustCompile(`^line (\d+): `)

// syntaxMsg turns "yaml: line 3: did not find expected key" into
// "name:3: did not find expected key".
func syntaxMsg(name string, err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		return name + ":" + m[1] + ": " + msg[len(m[0]):]
	}
	return name + ": " + msg
}
