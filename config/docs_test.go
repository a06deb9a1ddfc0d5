package config

import (
	"encoding"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// docsPath is the configuration reference the tests below keep in step with
// the code.
const docsPath = "../docs/configuration.md"

// docRow is one documented field: a row of a table of docs/configuration.md
// whose header has the columns field, type, default and environment.
type docRow struct {
	line                int
	path, typ, def, env string
}

// readDocRows parses the field tables of the configuration reference. A
// table is a field table when its header row names the columns "field",
// "type", "default" and "environment" (any order, any other columns too);
// every row of it must start with the field's path in backticks. Other
// tables (examples, value formats) are ignored.
func readDocRows(t *testing.T) []docRow {
	t.Helper()
	b, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatalf("reading the configuration reference: %v", err)
	}
	var rows []docRow
	var cols map[string]int // column indexes of the field table being read; nil outside one
	inFence := false
	for i, line := range strings.Split(string(b), "\n") {
		n := i + 1
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "```") {
			inFence = !inFence
			continue
		}
		if inFence || !strings.HasPrefix(trimmed, "|") {
			cols = nil
			continue
		}
		cells := splitRow(trimmed)
		if isSeparator(cells) {
			continue
		}
		if cols == nil {
			// A header row: is it a field table?
			c := map[string]int{}
			for j, cell := range cells {
				c[strings.ToLower(cell)] = j
			}
			_, f := c["field"]
			_, ty := c["type"]
			_, d := c["default"]
			_, e := c["environment"]
			if f && ty && d && e && c["field"] == 0 {
				cols = c
			} else {
				cols = map[string]int{} // a table of another kind: skip its rows
			}
			continue
		}
		if len(cols) == 0 {
			continue
		}
		get := func(col string) string {
			if j := cols[col]; j < len(cells) {
				return cells[j]
			}
			return ""
		}
		path, ok := codeSpan(get("field"))
		if !ok {
			t.Errorf("%s:%d: the first cell of a field table row must be a field path in backticks, got %q", docsPath, n, get("field"))
			continue
		}
		rows = append(rows, docRow{line: n, path: path, typ: get("type"), def: get("default"), env: get("environment")})
	}
	if len(rows) == 0 {
		t.Fatalf("%s: no field table found (a table whose header has the columns field, type, default, environment)", docsPath)
	}
	return rows
}

// splitRow splits a Markdown table row into its trimmed cells; "\|" is a
// literal bar.
func splitRow(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(line, "|")
	line = strings.TrimSuffix(line, "|")
	line = strings.ReplaceAll(line, `\|`, "\x00")
	var cells []string
	for c := range strings.SplitSeq(line, "|") {
		cells = append(cells, strings.TrimSpace(strings.ReplaceAll(c, "\x00", "|")))
	}
	return cells
}

// isSeparator reports whether cells are a header separator row (---).
func isSeparator(cells []string) bool {
	for _, c := range cells {
		if strings.Trim(c, "-: ") != "" {
			return false
		}
	}
	return true
}

// codeSpan returns the content of s when s is exactly one code span.
func codeSpan(s string) (string, bool) {
	if len(s) < 3 || s[0] != '`' || s[len(s)-1] != '`' || strings.Count(s, "`") != 2 {
		return "", false
	}
	return s[1 : len(s)-1], true
}

// leadingCodeSpan returns the content of the code span s starts with.
func leadingCodeSpan(s string) (string, bool) {
	if !strings.HasPrefix(s, "`") {
		return "", false
	}
	end := strings.IndexByte(s[1:], '`')
	if end < 0 {
		return "", false
	}
	return s[1 : 1+end], true
}

// TestDocsEveryPathDocumented fails for a field of Paths that the
// configuration reference does not document, and for a documented path that
// is no field (renamed or removed), documented twice, or whose environment
// variable is not EnvName of its path.
func TestDocsEveryPathDocumented(t *testing.T) {
	rows := readDocRows(t)
	known := map[string]bool{}
	for _, p := range Paths() {
		known[p] = true
	}
	documented := map[string]int{}
	for _, r := range rows {
		if prev, ok := documented[r.path]; ok {
			t.Errorf("%s:%d: field %s is documented twice (first at line %d)", docsPath, r.line, r.path, prev)
			continue
		}
		documented[r.path] = r.line
		if !known[r.path] {
			t.Errorf("%s:%d: documents field %s, which config.Paths() does not have (renamed or removed? the paths are spelled as Paths() spells them, [N] for a list index)", docsPath, r.line, r.path)
			continue
		}
		env, ok := codeSpan(r.env)
		if !ok {
			t.Errorf("%s:%d: field %s: the environment column must be the variable in backticks, got %q (want `%s`)", docsPath, r.line, r.path, r.env, EnvName(r.path))
		} else if env != EnvName(r.path) {
			t.Errorf("%s:%d: field %s: documented environment variable %s, but the code reads %s", docsPath, r.line, r.path, env, EnvName(r.path))
		}
		if r.typ == "" {
			t.Errorf("%s:%d: field %s: the type column is empty", docsPath, r.line, r.path)
		}
	}
	for _, p := range Paths() {
		if _, ok := documented[p]; !ok {
			t.Errorf("field %s (environment %s) is not documented in %s: add a row to one of its field tables", p, EnvName(p), docsPath)
		}
	}
}

// TestDocsDefaults compares the documented defaults with what EnsureDefaults
// fills in. The rule for the default column, by how the cell starts:
//
//   - a code span (`100ms`, `kdedup`, `false`, `0`): a fixed default. The
//     field's value after EnsureDefaults on the bare configuration (below),
//     written as its text form (Duration and ByteSize as they print, a
//     boolean as true or false, `""` for an empty string), must equal it.
//     Prose may follow the code span.
//   - "none" or "required": no default. The field, left unset in the bare
//     configuration, must still be at its zero value after EnsureDefaults.
//   - "computed": the default depends on other fields or on the host
//     (instance_id is the host name, changelog_topic is <group>.changelog, a
//     stream's output is <input>.deduped, its lateness its ttl, its
//     repartition_topic <group>.<name>.repartition). It is not compared;
//     the prose says what it is.
//   - "see": a mapping or a list of mappings whose fields have rows of
//     their own. Allowed only for such paths.
//
// Anything else fails: a default must be one of these, so that a new
// default cannot slip in as prose. The bare configuration has one stream
// with one key source and nothing else set, so that every path of Paths()
// exists in it ([N] is index 0) and every field is at its default.
func TestDocsDefaults(t *testing.T) {
	bare := bareConfig()
	bare.EnsureDefaults()
	root := reflect.ValueOf(bare).Elem()
	for _, r := range readDocRows(t) {
		v, msg := lookup(root, strings.ReplaceAll(r.path, "[N]", "[0]"))
		if msg != "" {
			continue // not a field: TestDocsEveryPathDocumented says so
		}
		lower := strings.ToLower(r.def)
		switch {
		case strings.HasPrefix(r.def, "`"):
			want, ok := leadingCodeSpan(r.def)
			if !ok {
				t.Errorf("%s:%d: field %s: unterminated code span in default %q", docsPath, r.line, r.path, r.def)
				continue
			}
			got, ok := textOf(v)
			if !ok {
				t.Errorf("%s:%d: field %s: a %s has no fixed default to document in backticks; use \"none\", \"required\", \"computed\" or \"see\"", docsPath, r.line, r.path, v.Type())
				continue
			}
			if got != want {
				t.Errorf("%s:%d: field %s: documented default `%s`, but EnsureDefaults gives `%s`", docsPath, r.line, r.path, want, got)
			}
		case strings.HasPrefix(lower, "none"), strings.HasPrefix(lower, "required"):
			// The bare configuration sets streams and streams[0].key
			// so that their elements exist: unset the field itself.
			v := unsetThenDefaulted(t, strings.ReplaceAll(r.path, "[N]", "[0]"))
			if !v.IsZero() {
				got, _ := textOf(v)
				t.Errorf("%s:%d: field %s: documented without a default (%q), but EnsureDefaults sets it to `%s`", docsPath, r.line, r.path, r.def, got)
			}
		case strings.HasPrefix(lower, "computed"):
			// Depends on other fields or on the host: not compared.
		case strings.HasPrefix(lower, "see"):
			if isLeaf(v.Type()) || v.Kind() == reflect.Slice && isLeaf(v.Type().Elem()) {
				t.Errorf("%s:%d: field %s: \"see ...\" is for mappings and lists of mappings; a %s needs its default", docsPath, r.line, r.path, v.Type())
			}
		default:
			t.Errorf("%s:%d: field %s: default %q must start with a value in backticks, \"none\", \"required\", \"computed\" or \"see\"", docsPath, r.line, r.path, r.def)
		}
	}
}

// bareConfig is the configuration TestDocsDefaults reads defaults from:
// one stream with one key source, nothing set.
func bareConfig() *Config {
	return &Config{Streams: []Stream{{Key: []KeySource{{}}}}}
}

// unsetThenDefaulted returns the field at path (no [N]) of a bare
// configuration in which it was set to its zero value before
// EnsureDefaults ran.
func unsetThenDefaulted(t *testing.T, path string) reflect.Value {
	t.Helper()
	c := bareConfig()
	root := reflect.ValueOf(c).Elem()
	v, msg := lookup(root, path)
	if msg != "" {
		t.Fatalf("%s: %s", path, msg)
	}
	v.SetZero()
	c.EnsureDefaults()
	v, msg = lookup(root, path)
	if msg != "" {
		t.Fatalf("%s after EnsureDefaults: %s", path, msg)
	}
	return v
}

// textOf writes a scalar field's value as the documentation writes it; ok
// is false for values that are not scalars.
func textOf(v reflect.Value) (string, bool) {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return "", false
		}
		v = v.Elem()
	}
	if v.Kind() == reflect.String && v.Len() == 0 {
		return `""`, true
	}
	switch x := v.Interface().(type) {
	case Secret:
		return x.Reveal(), true
	case Duration:
		return time.Duration(x).String(), true
	case ByteSize:
		return x.String(), true
	case encoding.TextMarshaler:
		b, err := x.MarshalText()
		return string(b), err == nil
	}
	switch v.Kind() {
	case reflect.String:
		return v.String(), true
	case reflect.Bool:
		return strconv.FormatBool(v.Bool()), true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(v.Uint(), 10), true
	}
	return fmt.Sprint(v.Interface()), false
}

// TestDocsBareConfigIsBare guards TestDocsDefaults' premise: the bare
// configuration reaches every path of Paths().
func TestDocsBareConfigIsBare(t *testing.T) {
	bare := bareConfig()
	bare.EnsureDefaults()
	root := reflect.ValueOf(bare).Elem()
	for _, p := range Paths() {
		if _, msg := lookup(root, strings.ReplaceAll(p, "[N]", "[0]")); msg != "" {
			t.Errorf("path %s does not exist in the bare configuration of TestDocsDefaults: %s", p, msg)
		}
	}
}
