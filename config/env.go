package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts the name of every environment variable Load reads.
const EnvPrefix = "KDEDUP_"

// EnvName returns the environment variable that sets the field at path:
// EnvPrefix followed by the upper-cased path, every run of characters other
// than ASCII letters and digits replaced by one "_" (none at the ends).
// EnvName("state.cache_size") is "KDEDUP_STATE_CACHE_SIZE" and
// EnvName("streams[0].ttl") is "KDEDUP_STREAMS_0_TTL".
func EnvName(path string) string {
	var b strings.Builder
	b.WriteString(EnvPrefix)
	gap := false
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c >= 'a' && c <= 'z':
			c -= 'a' - 'A'
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		default:
			gap = true
			continue
		}
		if gap && b.Len() > len(EnvPrefix) {
			b.WriteByte('_')
		}
		gap = false
		b.WriteByte(c)
	}
	return b.String()
}

// Paths lists the path of every field that can be set, in field order, with
// "[N]" standing for a list index: "brokers", ..., "state",
// "state.cache_size", ..., "streams", "streams[N]", "streams[N].name", ...,
// "streams[N].key[N].header", .... Lists of scalars (brokers, scope,
// compare) and fingerprints are set as a whole, so they have no element
// paths.
func Paths() []string {
	var out []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for _, f := range fieldsOf(t) {
			p := joinField(prefix, f.name)
			out = append(out, p)
			ft := f.typ
			switch {
			case isLeaf(ft):
			case ft.Kind() == reflect.Struct:
				walk(ft, p)
			case ft.Kind() == reflect.Slice && !isLeaf(ft.Elem()) && ft.Elem().Kind() == reflect.Struct:
				out = append(out, p+"[N]")
				walk(ft.Elem(), p+"[N]")
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return out
}

// settable calls fn with the path of every field and every struct list
// element that c has now, depth being the number of path segments. It goes
// no deeper than maxDepth.
func settable(v reflect.Value, prefix string, depth, maxDepth int, fn func(path string, depth int)) {
	if depth >= maxDepth {
		return
	}
	for _, f := range fieldsOf(v.Type()) {
		p := joinField(prefix, f.name)
		fn(p, depth+1)
		fv := v.Field(f.index)
		switch {
		case isLeaf(f.typ):
		case f.typ.Kind() == reflect.Struct:
			settable(fv, p, depth+1, maxDepth, fn)
		case f.typ.Kind() == reflect.Slice && f.typ.Elem().Kind() == reflect.Struct && !isLeaf(f.typ.Elem()):
			if depth+2 > maxDepth {
				continue
			}
			for i := range fv.Len() {
				ep := joinIndex(p, i)
				fn(ep, depth+2)
				settable(fv.Index(i), ep, depth+2, maxDepth, fn)
			}
		}
	}
}

// applyEnv sets c's fields from the KDEDUP_ variables of env. A variable
// for a field inside a list element is looked up only once the element
// exists, so shallower variables are applied first: KDEDUP_STREAMS before
// KDEDUP_STREAMS_0 before KDEDUP_STREAMS_0_TTL. It returns the problems and
// the sorted names of the variables that set nothing.
func applyEnv(c *Config, env []string) (problems []Problem, ignored []string) {
	vars := make(map[string]string)
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(k, EnvPrefix) {
			vars[k] = v // the last occurrence wins, as in os/exec
		}
	}
	if len(vars) == 0 {
		return nil, nil
	}
	root := reflect.ValueOf(c).Elem()
	applied := make(map[string]bool)
	for depth := 1; ; depth++ {
		var paths []string
		settable(root, "", 0, depth, func(p string, d int) {
			if d == depth {
				paths = append(paths, p)
			}
		})
		if len(paths) == 0 {
			break
		}
		for _, p := range paths {
			name := EnvName(p)
			val, ok := vars[name]
			if !ok || applied[name] {
				continue
			}
			applied[name] = true
			for _, pr := range setPath(c, p, val) {
				pr.Var = name
				problems = append(problems, pr)
			}
		}
	}
	for k := range vars {
		if !applied[k] {
			ignored = append(ignored, k)
		}
	}
	sort.Strings(ignored)
	return problems, ignored
}

// setPath sets the field of c at path from raw, read as Load documents.
func setPath(c *Config, path, raw string) []Problem {
	v, msg := lookup(reflect.ValueOf(c).Elem(), path)
	if msg != "" {
		return []Problem{{Path: path, Msg: msg}}
	}
	d := &decoder{root: path}
	d.setRaw(v, path, raw)
	return d.problems
}

// lookup finds the settable value at path under root, or says why not.
func lookup(root reflect.Value, path string) (reflect.Value, string) {
	segs, err := parsePath(path)
	if err != nil {
		return reflect.Value{}, err.Error()
	}
	v := root
	at := ""
	for _, s := range segs {
		if s.isIndex {
			if v.Kind() != reflect.Slice || isLeaf(v.Type()) {
				return reflect.Value{}, fmt.Sprintf("%s is not a list", at)
			}
			if s.index >= v.Len() {
				return reflect.Value{}, fmt.Sprintf("index %d out of range (%s has %d)", s.index, at, v.Len())
			}
			v = v.Index(s.index)
			at = joinIndex(at, s.index)
			continue
		}
		if v.Kind() != reflect.Struct || isLeaf(v.Type()) {
			return reflect.Value{}, "unknown field"
		}
		f, ok := fieldByName(v.Type(), s.name)
		if !ok {
			return reflect.Value{}, "unknown field"
		}
		v = v.Field(f.index)
		at = joinField(at, s.name)
	}
	return v, ""
}

// strNode is a YAML string scalar holding s verbatim.
func strNode(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

// listNode is a YAML sequence of the comma-separated items of s, each
// trimmed of spaces; empty items are dropped.
func listNode(s string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			n.Content = append(n.Content, strNode(item))
		}
	}
	return n
}

// setRaw sets v from an environment variable's or override's value.
func (d *decoder) setRaw(v reflect.Value, path, raw string) {
	t := v.Type()
	if raw == "" {
		v.SetZero()
		return
	}
	flow := strings.HasPrefix(strings.TrimSpace(raw), "[")
	switch {
	case t == fingerprintPtrType:
		switch {
		case flow:
			d.yamlValue(v, path, raw)
		case raw == "value":
			d.decode(strNode(raw), v, path)
		default:
			d.decode(listNode(raw), v, path)
		}
	case isText(t) || t.Kind() == reflect.String:
		d.decode(strNode(raw), v, path)
	case t.Kind() == reflect.Slice && isLeaf(t.Elem()):
		if flow {
			d.yamlValue(v, path, raw)
		} else {
			d.decode(listNode(raw), v, path)
		}
	case isLeaf(t):
		// Numbers and booleans: a plain scalar, resolved as YAML would.
		d.decode(&yaml.Node{Kind: yaml.ScalarNode, Value: raw}, v, path)
	default:
		d.yamlValue(v, path, raw)
	}
}

// yamlValue parses raw as a YAML document and decodes it into v.
func (d *decoder) yamlValue(v reflect.Value, path, raw string) {
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(raw), &n); err != nil {
		d.addf(path, "invalid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		return
	}
	d.decode(&n, v, path)
}
