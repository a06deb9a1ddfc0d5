package helm_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// freeForm are the values whose content is the user's, not the chart's:
// their fields are kdedup's (docs/configuration.md) or Kubernetes'.
var freeForm = map[string]bool{"config": true}

// valuesLeaves walks values.yaml and calls fn with the path of every value
// that is not a non-empty mapping (and of every free-form one), its key
// node, the key node of its previous sibling (nil for the first) and the
// key node of its parent (nil at the top).
func valuesLeaves(n *yaml.Node, path string, parent *yaml.Node, fn func(path string, key, prev, parent *yaml.Node, leaf bool)) {
	var prev *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		p := k.Value
		if path != "" {
			p = path + "." + k.Value
		}
		leaf := v.Kind != yaml.MappingNode || len(v.Content) == 0 || freeForm[p]
		fn(p, k, prev, parent, leaf)
		if !leaf {
			valuesLeaves(v, p, k, fn)
		}
		prev = k
	}
}

func readValues(t *testing.T) *yaml.Node {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("values.yaml: %v", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		t.Fatal("values.yaml is not a mapping")
	}
	return doc.Content[0]
}

// TestValuesDocumented checks that every value of values.yaml has a
// comment above it: its own, or, for a value on the line right below a
// documented sibling (certKey and keyKey), the comment of the pair, or,
// for the scalar fields of a documented mapping (probes.startup.*), the
// mapping's.
func TestValuesDocumented(t *testing.T) {
	root := readValues(t)
	documented := make(map[*yaml.Node]bool)
	valuesLeaves(root, "", nil, func(path string, k, prev, parent *yaml.Node, _ bool) {
		switch {
		case strings.TrimSpace(k.HeadComment) != "":
			documented[k] = true
		case prev != nil && documented[prev] && prev.Line == k.Line-1:
			documented[k] = true
		case parent != nil && documented[parent] && scalarFields(root, path):
			documented[k] = true
		default:
			t.Errorf("values.yaml:%d: %s has no comment above it (what it sets, its default, why)", k.Line, path)
		}
	})
}

// scalarFields reports whether the mapping holding path has only scalar
// values.
func scalarFields(root *yaml.Node, path string) bool {
	n := root
	segs := strings.Split(path, ".")
	for _, s := range segs[:len(segs)-1] {
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == s {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			return false
		}
		n = next
	}
	for i := 1; i < len(n.Content); i += 2 {
		if n.Content[i].Kind != yaml.ScalarNode {
			return false
		}
	}
	return true
}

// TestValuesInReadme checks that the chart's README lists every value of
// values.yaml in its table: by its path, or by its parent's path with .*
// (probes.startup.*).
func TestValuesInReadme(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	listed := make(map[string]bool)
	cell := regexp.MustCompile("`([a-zA-Z][a-zA-Z0-9.*]*)`")
	for line := range strings.SplitSeq(string(b), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first, _, _ := strings.Cut(strings.TrimPrefix(line, "| "), " |")
		for _, m := range cell.FindAllStringSubmatch(first, -1) {
			listed[m[1]] = true
		}
	}
	valuesLeaves(readValues(t), "", nil, func(path string, k, _, _ *yaml.Node, leaf bool) {
		if !leaf {
			return
		}
		parent := path[:max(strings.LastIndex(path, "."), 0)]
		if !listed[path] && !listed[parent+".*"] {
			t.Errorf("values.yaml:%d: %s is not in the table of %s/README.md", k.Line, path, chartDir)
		}
	})
	all := make(map[string]bool)
	valuesLeaves(readValues(t), "", nil, func(path string, _, _, _ *yaml.Node, _ bool) { all[path] = true })
	for p := range listed {
		if !all[strings.TrimSuffix(p, ".*")] {
			t.Errorf("%s/README.md lists %s, which values.yaml does not have", chartDir, p)
		}
	}
}
