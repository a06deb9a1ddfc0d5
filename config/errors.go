package config

import (
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a configuration.
type Problem struct {
	// Path is the field path, e.g. "streams[0].ttl". It is empty for a
	// problem with the whole file, such as a YAML syntax error.
	Path string
	// Msg says what is wrong, e.g. `invalid duration "soon"`.
	Msg string
	// Var is the environment variable the bad value came from; empty when it
	// came from the file, a flag, or the configuration as a whole.
	Var string
	// Flag is true when the bad value came from a command-line override.
	Flag bool
}

// String formats the problem as one line: "path: msg" for the file and for
// validation, "VAR (path): msg" for an environment variable and
// "--set path: msg" for a command-line override.
func (p Problem) String() string {
	switch {
	case p.Var != "":
		return p.Var + " (" + p.Path + "): " + p.Msg
	case p.Flag:
		return "--set " + p.Path + ": " + p.Msg
	case p.Path == "":
		return p.Msg
	default:
		return p.Path + ": " + p.Msg
	}
}

// Error is a configuration that cannot be used. It holds every problem
// found, in field order: the order of the fields in Config (and of the
// elements in lists), problems at the same path in the order they were
// found (file, then environment, then flags, then validation).
type Error struct {
	// Problems are never empty.
	Problems []Problem
}

// Error returns the problems, one per line.
func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// errorOf returns nil for no problems, else an *Error holding them sorted.
func errorOf(ps []Problem) error {
	if len(ps) == 0 {
		return nil
	}
	sortProblems(ps)
	return &Error{Problems: ps}
}

// sortProblems sorts problems stably into field order.
func sortProblems(ps []Problem) {
	type keyed struct {
		key []int
		p   Problem
	}
	ks := make([]keyed, len(ps))
	for i, p := range ps {
		ks[i] = keyed{sortKey(p.Path), p}
	}
	slices.SortStableFunc(ks, func(a, b keyed) int { return slices.Compare(a.key, b.key) })
	for i := range ks {
		ps[i] = ks[i].p
	}
}

// unknownPos sorts a field that Config does not have after every field that
// it has, at the same level.
const unknownPos = 1 << 30

// sortKey maps a path to its position in Config: one number per segment, a
// field's index in its struct or an element's index in its list.
func sortKey(path string) []int {
	if path == "" {
		return nil
	}
	segs, err := parsePath(path)
	if err != nil {
		return []int{unknownPos}
	}
	key := make([]int, 0, len(segs))
	t := reflect.TypeFor[Config]()
	for _, s := range segs {
		if t != nil && t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if s.isIndex {
			key = append(key, s.index)
			if t != nil && t.Kind() == reflect.Slice {
				t = t.Elem()
			} else {
				t = nil
			}
			continue
		}
		if t == nil || t.Kind() != reflect.Struct || isLeaf(t) {
			key = append(key, unknownPos)
			t = nil
			continue
		}
		f, ok := fieldByName(t, s.name)
		if !ok {
			key = append(key, unknownPos)
			t = nil
			continue
		}
		key = append(key, f.index)
		t = f.typ
	}
	return key
}

// segment is one step of a field path: a field name or a list index.
type segment struct {
	name    string
	index   int
	isIndex bool
}

// parsePath splits a path such as "streams[0].key[1].header".
func parsePath(path string) ([]segment, error) {
	var segs []segment
	i := 0
	wantName := true
	for i < len(path) {
		switch {
		case wantName:
			j := i
			for j < len(path) && path[j] != '.' && path[j] != '[' && path[j] != ']' {
				j++
			}
			if j == i {
				return nil, errInvalidPath
			}
			segs = append(segs, segment{name: path[i:j]})
			i = j
			wantName = false
		case path[i] == '.':
			i++
			wantName = true
			if i == len(path) {
				return nil, errInvalidPath
			}
		case path[i] == '[':
			j := strings.IndexByte(path[i:], ']')
			if j < 0 {
				return nil, errInvalidPath
			}
			digits := path[i+1 : i+j]
			n, err := strconv.Atoi(digits)
			if err != nil || n < 0 || strings.TrimLeft(digits, "0123456789") != "" {
				return nil, errInvalidPath
			}
			segs = append(segs, segment{index: n, isIndex: true})
			i += j + 1
		default:
			return nil, errInvalidPath
		}
	}
	if len(segs) == 0 {
		return nil, errInvalidPath
	}
	return segs, nil
}

type pathError struct{}

func (pathError) Error() string {
	return `invalid path (want field names joined by "." with [N] list indices, e.g. streams[0].ttl)`
}

var errInvalidPath error = pathError{}

// joinField appends a field name to a path.
func joinField(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// joinIndex appends a list index to a path.
func joinIndex(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}
