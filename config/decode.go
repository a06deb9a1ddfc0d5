package config

import (
	"encoding"
	"encoding/base64"
	"fmt"
	"reflect"
	"strconv"
	"sync"

	"go.yaml.in/yaml/v3"
)

// maxAliasVisits bounds the values reached through YAML aliases, so that a
// small file of nested aliases ("billion laughs") cannot make decoding run
// for ever. A real configuration reaches a few hundred at most.
const maxAliasVisits = 100_000

// decoder walks a yaml.Node tree into a Go value by the value's yaml struct
// tags. Unlike yaml.Node.Decode it does not stop at the first problem: it
// records every one with the field path where it occurred and carries on
// with the next field.
type decoder struct {
	problems    []Problem
	aliasDepth  int
	aliasVisits int
	tooComplex  bool
	// root is the path decoding started at, where a problem with the whole
	// value is recorded.
	root string
	// expanding holds the alias targets being decoded, to catch an alias
	// inside the value it refers to (`a: &x {<<: *x}`), which the YAML
	// parser accepts.
	expanding map[*yaml.Node]bool
}

// enter marks n as being expanded, or records a problem and returns false
// when it already is.
func (d *decoder) enter(n *yaml.Node, path string) bool {
	if d.expanding[n] {
		if n.Anchor != "" {
			d.addf(path, "YAML alias *%s is used inside its own value", n.Anchor)
		} else {
			d.add(path, "YAML alias is used inside its own value")
		}
		return false
	}
	if d.expanding == nil {
		d.expanding = make(map[*yaml.Node]bool)
	}
	d.expanding[n] = true
	d.aliasDepth++
	return true
}

func (d *decoder) leave(n *yaml.Node) {
	delete(d.expanding, n)
	d.aliasDepth--
}

func (d *decoder) add(path, msg string) {
	d.problems = append(d.problems, Problem{Path: path, Msg: msg})
}

func (d *decoder) addf(path, format string, args ...any) {
	d.add(path, fmt.Sprintf(format, args...))
}

// wantGot records that the node at path is not of the kind t needs.
func (d *decoder) wantGot(path string, t reflect.Type, n *yaml.Node) {
	d.addf(path, "want %s, got %s", want(t), describe(n))
}

var (
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	fingerprintPtrType  = reflect.TypeFor[*Fingerprint]()
	fingerprintType     = reflect.TypeFor[Fingerprint]()
	durationType        = reflect.TypeFor[Duration]()
	byteSizeType        = reflect.TypeFor[ByteSize]()
	scopePartType       = reflect.TypeFor[ScopePart]()
)

// isText reports whether t decodes from a scalar through UnmarshalText.
func isText(t reflect.Type) bool {
	return t.Kind() != reflect.Pointer && reflect.PointerTo(t).Implements(textUnmarshalerType)
}

// isLeaf reports whether t is set as a whole, never field by field: a
// scalar, a text type such as ScopePart, or a Fingerprint.
func isLeaf(t reflect.Type) bool {
	if t == fingerprintPtrType || t == fingerprintType || isText(t) {
		return true
	}
	k := t.Kind()
	return k != reflect.Struct && k != reflect.Slice && k != reflect.Pointer
}

// want describes what a value of type t is written as.
func want(t reflect.Type) string {
	switch t {
	case durationType:
		return `a duration such as "1h30m"`
	case byteSizeType:
		return `a size such as "64MiB"`
	case scopePartType:
		return "header:NAME or json:PATH"
	case fingerprintPtrType, fingerprintType:
		return `a list of JSON fields or "value"`
	}
	if isText(t) {
		return "a string"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice:
		return "a list"
	case reflect.Struct:
		return "a mapping"
	case reflect.Pointer:
		return want(t.Elem())
	}
	return t.String()
}

// describe says what a node is, for error messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		if n.Alias != nil {
			return describe(n.Alias)
		}
	case yaml.DocumentNode:
		if len(n.Content) > 0 {
			return describe(n.Content[0])
		}
	case yaml.ScalarNode:
		return quote(n.Value)
	}
	return "nothing"
}

// quote quotes s for a message, shortened if long.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		r := []rune(s)
		if len(r) > max {
			return strconv.Quote(string(r[:max])) + "..."
		}
	}
	return strconv.Quote(s)
}

// isNull reports whether n is an explicit or implicit YAML null.
func isNull(n *yaml.Node) bool {
	return n.Kind == 0 || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// isMergeKey reports whether n is the "<<" key of a YAML merge.
func isMergeKey(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Value == "<<" &&
		(n.Tag == "" || n.Tag == "!" || n.ShortTag() == "!!merge")
}

// field is one yaml-tagged field of a struct.
type field struct {
	name  string
	index int
	typ   reflect.Type
}

var fieldCache sync.Map // reflect.Type -> []field

// fieldsOf lists the yaml-tagged exported fields of struct type t, in order.
// Fields tagged "-" or without a yaml tag are not configuration.
func fieldsOf(t reflect.Type) []field {
	if fs, ok := fieldCache.Load(t); ok {
		return fs.([]field)
	}
	var fs []field
	for i := range t.NumField() {
		sf := t.Field(i)
		tag, ok := sf.Tag.Lookup("yaml")
		if !ok || !sf.IsExported() {
			continue
		}
		name := tag
		for j := 0; j < len(tag); j++ {
			if tag[j] == ',' {
				name = tag[:j]
				break
			}
		}
		if name == "-" || name == "" {
			continue
		}
		fs = append(fs, field{name: name, index: i, typ: sf.Type})
	}
	fieldCache.Store(t, fs)
	return fs
}

// fieldByName finds the field of struct type t whose yaml name is name.
func fieldByName(t reflect.Type, name string) (field, bool) {
	for _, f := range fieldsOf(t) {
		if f.name == name {
			return f, true
		}
	}
	return field{}, false
}

// decode sets v, which must be addressable, from n. A null sets v to its
// zero value; a mapping decoded into a struct sets only the fields it
// names; a list replaces a slice. On a problem, v keeps what it had.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if d.tooComplex {
		return
	}
	if d.aliasDepth > 0 {
		d.aliasVisits++
		if d.aliasVisits > maxAliasVisits {
			d.tooComplex = true
			d.addf(d.root, "YAML aliases expand to more than %d values", maxAliasVisits)
			return
		}
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			v.SetZero()
			return
		}
		d.decode(n.Content[0], v, path)
		return
	case yaml.AliasNode:
		if n.Alias == nil {
			v.SetZero()
			return
		}
		if d.enter(n.Alias, path) {
			d.decode(n.Alias, v, path)
			d.leave(n.Alias)
		}
		return
	}
	if isNull(n) {
		v.SetZero()
		return
	}
	t := v.Type()
	if t == fingerprintPtrType {
		if fp := d.fingerprint(n, path); fp != nil {
			v.Set(reflect.ValueOf(fp))
		}
		return
	}
	if isText(t) {
		if n.Kind != yaml.ScalarNode {
			d.wantGot(path, t, n)
			return
		}
		p := reflect.New(t)
		if err := p.Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			d.add(path, err.Error())
			return
		}
		v.Set(p.Elem())
		return
	}
	switch t.Kind() {
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.wantGot(path, t, n)
			return
		}
		s := n.Value
		if n.ShortTag() == "!!binary" {
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				d.addf(path, "invalid !!binary value: %v", err)
				return
			}
			s = string(b)
		}
		v.SetString(s)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			d.wantGot(path, t, n)
			return
		}
		var i int64
		if err := n.Decode(&i); err != nil || v.OverflowInt(i) {
			d.addf(path, "integer %s out of range", quote(n.Value))
			return
		}
		v.SetInt(i)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			d.wantGot(path, t, n)
			return
		}
		var b bool
		if err := n.Decode(&b); err != nil {
			d.wantGot(path, t, n)
			return
		}
		v.SetBool(b)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.wantGot(path, t, n)
			return
		}
		if len(n.Content) == 0 {
			v.SetZero()
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, e := range n.Content {
			d.decode(e, s.Index(i), joinIndex(path, i))
		}
		v.Set(s)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			d.wantGot(path, t, n)
			return
		}
		d.mapping(n, v, path)
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(t.Elem()))
		}
		d.decode(n, v.Elem(), path)
	default:
		// A programming error: Config gained a field of a kind this walker
		// does not know.
		d.addf(path, "cannot decode into %s", t)
	}
}

// mapping decodes mapping node n into struct v: merged mappings ("<<")
// first, so that the mapping's own keys win, then its own keys in order.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if isMergeKey(n.Content[i]) {
			d.merge(n.Content[i+1], v, path)
		}
	}
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if isMergeKey(k) {
			continue
		}
		for k.Kind == yaml.AliasNode && k.Alias != nil {
			k = k.Alias
		}
		if k.Kind != yaml.ScalarNode {
			d.addf(path, "field names must be strings, got %s", describe(k))
			continue
		}
		name := k.Value
		fpath := joinField(path, name)
		if line, dup := seen[name]; dup {
			d.addf(fpath, "set twice (lines %d and %d)", line, k.Line)
			continue
		}
		seen[name] = k.Line
		f, ok := fieldByName(v.Type(), name)
		if !ok {
			d.add(fpath, "unknown field")
			continue
		}
		d.decode(val, v.Field(f.index), fpath)
	}
}

// merge decodes the value of a "<<" key into struct v: a mapping, or a list
// of mappings of which the earlier win.
func (d *decoder) merge(n *yaml.Node, v reflect.Value, path string) {
	resolve := func(n *yaml.Node) *yaml.Node {
		for n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		return n
	}
	n = resolve(n)
	var maps []*yaml.Node
	switch n.Kind {
	case yaml.MappingNode:
		maps = []*yaml.Node{n}
	case yaml.SequenceNode:
		for i := len(n.Content) - 1; i >= 0; i-- {
			maps = append(maps, resolve(n.Content[i]))
		}
	}
	for _, m := range maps {
		if m.Kind != yaml.MappingNode {
			maps = nil
			break
		}
	}
	if maps == nil {
		d.addf(joinField(path, "<<"), "want a mapping or a list of mappings to merge, got %s", describe(n))
		return
	}
	for _, m := range maps {
		if d.enter(m, path) {
			d.decode(m, v, path)
			d.leave(m)
		}
	}
}

// fingerprint decodes `fingerprint: value` or `fingerprint: [field, ...]`.
// It returns nil after recording a problem.
func (d *decoder) fingerprint(n *yaml.Node, path string) *Fingerprint {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch {
	case n.Kind == yaml.ScalarNode && n.Value == "value" && n.ShortTag() == "!!str":
		return &Fingerprint{Whole: true}
	case n.Kind == yaml.SequenceNode:
		fp := &Fingerprint{}
		before := len(d.problems)
		d.decode(n, reflect.ValueOf(&fp.Fields).Elem(), path)
		if len(d.problems) > before {
			return nil
		}
		return fp
	default:
		d.wantGot(path, fingerprintPtrType, n)
		return nil
	}
}
