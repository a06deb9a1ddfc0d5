package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzLoadYAML feeds arbitrary bytes as the configuration file. Loading must
// not panic, and must give either a configuration that validates (and
// survives being written as YAML and read back) or an *Error with at least
// one problem.
func FuzzLoadYAML(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("streams: [&s {name: a, input: b, ttl: 1h, key: [{header: k}]}, {<<: *s, name: c, input: d}]"))
	f.Add([]byte("a: &a [x, x]\nb: &b [*a, *a]\nstreams: [*b, *b]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := loadBytes("fuzz.yaml", data, LoadOptions{})
		if err != nil {
			if c != nil {
				t.Fatalf("config returned with error %v", err)
			}
			var cerr *Error
			if !errors.As(err, &cerr) || len(cerr.Problems) == 0 || err.Error() == "" {
				t.Fatalf("error is not an *Error with problems: %T %v", err, err)
			}
			return
		}
		if c == nil {
			t.Fatal("no config and no error")
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("loaded config does not validate: %v", err)
		}
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		c2, err := loadBytes("marshalled.yaml", out, LoadOptions{})
		if err != nil {
			t.Fatalf("marshalled config does not load: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip changed the config\nbefore: %+v\nafter:  %+v", c, c2)
		}
	})
}
