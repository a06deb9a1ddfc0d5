package dedup

import (
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// maxJSONDepth is the nesting limit of encoding/json, so that a value is
// valid JSON here exactly when json.Valid says so.
const maxJSONDepth = 10000

// pathNode is one segment of the trie of every JSON path a stream reads
// (key sources, fingerprint fields, scope parts, compare fields). The trie
// lets one pass over a value find all of them.
//
// Path ids are assigned in depth-first order, so the ids of every path at or
// below a node form the range [lo, hi): when an object member repeats, the
// spans under it are cleared and the last occurrence wins, as in
// encoding/json.
type pathNode struct {
	seg      string
	children []*pathNode
	id       int // path ending here, or -1
	lo, hi   int
}

// pathTrie holds the compiled paths of one stream.
type pathTrie struct {
	root  *pathNode
	paths []string // by id
}

// addPath returns the id of path, adding it to the trie. Ids are final only
// after finish.
func (t *pathTrie) addPath(path string) {
	if t.root == nil {
		t.root = &pathNode{id: -1}
	}
	n := t.root
	for _, seg := range strings.Split(path, ".") {
		var next *pathNode
		for _, c := range n.children {
			if c.seg == seg {
				next = c
				break
			}
		}
		if next == nil {
			next = &pathNode{seg: seg, id: -1}
			n.children = append(n.children, next)
		}
		n = next
	}
	n.id = -2 // marked; numbered in finish
}

// finish numbers the paths depth-first and records each node's id range.
func (t *pathTrie) finish() {
	if t.root == nil {
		return
	}
	var walk func(n *pathNode, prefix string)
	walk = func(n *pathNode, prefix string) {
		n.lo = len(t.paths)
		if n.id == -2 {
			n.id = len(t.paths)
			t.paths = append(t.paths, prefix)
		}
		for _, c := range n.children {
			p := c.seg
			if prefix != "" {
				p = prefix + "." + c.seg
			}
			walk(c, p)
		}
		n.hi = len(t.paths)
	}
	walk(t.root, "")
}

// id returns the id of a path added before finish, or -1.
func (t *pathTrie) id(path string) int {
	for i, p := range t.paths {
		if p == path {
			return i
		}
	}
	return -1
}

// span locates a JSON value inside the record's value; end == 0 means the
// path was not found.
type span struct{ start, end int }

// jsonDoc is a record value parsed at most once: on first use it is
// validated whole and every path of the trie is located in the same pass.
// Its buffers are reused from record to record.
type jsonDoc struct {
	trie   *pathTrie
	data   []byte
	parsed bool
	valid  bool
	spans  []span
	keybuf []byte // unescaped member names
}

func (d *jsonDoc) reset(data []byte) {
	d.data = data
	d.parsed = false
	d.valid = false
}

// parse validates the value and locates the paths, once per record.
func (d *jsonDoc) parse() bool {
	if d.parsed {
		return d.valid
	}
	d.parsed = true
	n := 0
	if d.trie != nil {
		n = len(d.trie.paths)
	}
	if cap(d.spans) < n {
		d.spans = make([]span, n)
	}
	d.spans = d.spans[:n]
	clear(d.spans)
	var root *pathNode
	if d.trie != nil {
		root = d.trie.root
	}
	i := skipSpace(d.data, 0)
	i = d.value(i, root, 0)
	if i < 0 || skipSpace(d.data, i) != len(d.data) {
		clear(d.spans)
		return false
	}
	d.valid = true
	return true
}

// get returns the raw JSON of path id, if the value is valid JSON and holds
// it.
func (d *jsonDoc) get(id int) ([]byte, bool) {
	if !d.parse() {
		return nil, false
	}
	s := d.spans[id]
	if s.end == 0 {
		return nil, false
	}
	return d.data[s.start:s.end], true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// value parses one JSON value at b[i] (no leading space) and returns the
// index after it, or -1 when the value is not valid JSON. n is the trie
// node the value is found at, nil when no path goes here.
func (d *jsonDoc) value(i int, n *pathNode, depth int) int {
	b := d.data
	if i >= len(b) {
		return -1
	}
	start := i
	switch c := b[i]; {
	case c == '{':
		if depth >= maxJSONDepth {
			return -1
		}
		i = d.object(i, n, depth+1)
	case c == '[':
		if depth >= maxJSONDepth {
			return -1
		}
		i = d.array(i, n, depth+1)
	case c == '"':
		i = scanString(b, i)
	case c == 't':
		i = literal(b, i, "true")
	case c == 'f':
		i = literal(b, i, "false")
	case c == 'n':
		i = literal(b, i, "null")
	case c == '-' || (c >= '0' && c <= '9'):
		i = scanNumber(b, i)
	default:
		return -1
	}
	if i >= 0 && n != nil && n.id >= 0 {
		d.spans[n.id] = span{start, i}
	}
	return i
}

func (d *jsonDoc) object(i int, n *pathNode, depth int) int {
	b := d.data
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return -1
		}
		ks := i
		i = scanString(b, i)
		if i < 0 {
			return -1
		}
		var child *pathNode
		if n != nil && len(n.children) > 0 {
			child = d.member(b[ks:i], n)
		}
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != ':' {
			return -1
		}
		i = skipSpace(b, i+1)
		if child != nil {
			// A repeated member replaces everything an earlier one gave.
			clear(d.spans[child.lo:child.hi])
		}
		var end bool
		if i, end = d.next(d.value(i, child, depth), '}'); end || i < 0 {
			return i
		}
	}
}

// member returns the child of n named by the quoted member name q.
func (d *jsonDoc) member(q []byte, n *pathNode) *pathNode {
	name := q[1 : len(q)-1]
	if needsUnquote(q) {
		d.keybuf = unquoteInto(d.keybuf[:0], q)
		name = d.keybuf
	}
	for _, c := range n.children {
		if c.seg == string(name) {
			return c
		}
	}
	return nil
}

func (d *jsonDoc) array(i int, n *pathNode, depth int) int {
	b := d.data
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1
	}
	for idx := 0; ; idx++ {
		var child *pathNode
		if n != nil {
			for _, c := range n.children {
				if isIndex(c.seg, idx) {
					child = c
					break
				}
			}
		}
		var end bool
		if i, end = d.next(d.value(i, child, depth), ']'); end || i < 0 {
			return i
		}
	}
}

// next reads what follows a member or element that ended before i (i < 0:
// the value was invalid): a ',' and the space after it, giving the next
// one's start, or close, giving the index after it and end. Anything else
// is invalid: -1.
func (d *jsonDoc) next(i int, close byte) (int, bool) {
	if i < 0 {
		return -1, false
	}
	b := d.data
	i = skipSpace(b, i)
	switch {
	case i >= len(b):
		return -1, false
	case b[i] == ',':
		return skipSpace(b, i+1), false
	case b[i] == close:
		return i + 1, true
	}
	return -1, false
}

// isIndex reports whether seg is the decimal form of idx ("0", "12"; no
// leading zeros, no sign).
func isIndex(seg string, idx int) bool {
	if seg == "" || (len(seg) > 1 && seg[0] == '0') {
		return false
	}
	v, err := strconv.Atoi(seg)
	return err == nil && v == idx && seg[0] != '+' && seg[0] != '-'
}

func literal(b []byte, i int, lit string) int {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// scanString returns the index after the string starting at b[i] == '"'.
// strSpecial marks the bytes scanString must look at inside a string:
// the closing quote, a backslash and the control characters JSON forbids
// there.
var strSpecial = func() (t [256]bool) {
	for c := 0; c < 0x20; c++ {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

func scanString(b []byte, i int) int {
	i++
	for i < len(b) {
		// Most bytes of a string are plain: skip them with one table
		// load each, four at a time.
		for i+4 <= len(b) && !strSpecial[b[i]] && !strSpecial[b[i+1]] && !strSpecial[b[i+2]] && !strSpecial[b[i+3]] {
			i += 4
		}
		for i < len(b) && !strSpecial[b[i]] {
			i++
		}
		if i == len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			return i + 1
		case c == '\\':
			if i+1 >= len(b) {
				return -1
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return -1
				}
				for _, h := range b[i+2 : i+6] {
					if !isHex(h) {
						return -1
					}
				}
				i += 6
			default:
				return -1
			}
		case c < 0x20:
			return -1
		default:
			i++
		}
	}
	return -1
}

func scanNumber(b []byte, i int) int {
	if b[i] == '-' {
		i++
	}
	if i >= len(b) {
		return -1
	}
	switch {
	case b[i] == '0':
		i++
	case b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return -1
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return -1
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	return i
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func hexVal(c byte) rune {
	switch {
	case c >= '0' && c <= '9':
		return rune(c - '0')
	case c >= 'a' && c <= 'f':
		return rune(c - 'a' + 10)
	default:
		return rune(c - 'A' + 10)
	}
}

// unquoteInto appends the decoded content of the valid JSON string q
// (quotes included) to dst, exactly as encoding/json decodes it: escapes
// resolved, surrogate pairs joined, invalid UTF-8 and lone surrogates
// replaced by U+FFFD.
func unquoteInto(dst, q []byte) []byte {
	s := q[1 : len(q)-1]
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\':
			e := s[i+1]
			i += 2
			switch e {
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				r := hex4(s[i:])
				i += 4
				if utf16.IsSurrogate(r) {
					if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
						if r2 := utf16.DecodeRune(r, hex4(s[i+2:])); r2 != utf8.RuneError {
							dst = utf8.AppendRune(dst, r2)
							i += 6
							continue
						}
					}
					r = utf8.RuneError
				}
				dst = utf8.AppendRune(dst, r)
			default: // '"', '\\', '/'
				dst = append(dst, e)
			}
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, size := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && size == 1 {
				dst = utf8.AppendRune(dst, utf8.RuneError)
			} else {
				dst = append(dst, s[i:i+size]...)
			}
			i += size
		}
	}
	return dst
}

func hex4(b []byte) rune {
	return hexVal(b[0])<<12 | hexVal(b[1])<<8 | hexVal(b[2])<<4 | hexVal(b[3])
}

// needsUnquote reports whether the JSON string q (quotes included) differs
// from its content: it has an escape or a byte that may be invalid UTF-8.
func needsUnquote(q []byte) bool {
	for _, c := range q[1 : len(q)-1] {
		if c == '\\' || c >= utf8.RuneSelf {
			return true
		}
	}
	return false
}
