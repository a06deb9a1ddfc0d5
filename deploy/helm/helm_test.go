package helm_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"sigs.k8s.io/yaml"
)

// The helm the tests run: the module and version go install builds.
const (
	helmModule  = "helm.sh/helm/v3/cmd/helm"
	helmVersion = "v3.22.0"
)

// chartDir is the chart, relative to this package.
const chartDir = "kdedup"

// The release the tests render: its name and namespace.
const (
	releaseName = "prod"
	namespace   = "streams"
)

var (
	helmOnce sync.Once
	helmPath string
	helmSkip string // why the tests skip: helm could not be fetched
	helmErr  error
)

// helmBinary returns the helm to run: KDEDUP_HELM, or one built by go
// install into KDEDUP_HELM_CACHE (the user's cache directory by default)
// on first use and kept there. It skips the test only when the Go
// toolchain could not fetch helm's modules; any other failure fails it.
func helmBinary(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() { helmPath, helmSkip, helmErr = findHelm() })
	if helmSkip != "" {
		t.Skip(helmSkip)
	}
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	return helmPath
}

func findHelm() (path, skip string, err error) {
	if p := os.Getenv("KDEDUP_HELM"); p != "" {
		return p, "", nil
	}
	dir := os.Getenv("KDEDUP_HELM_CACHE")
	if dir == "" {
		c, err := os.UserCacheDir()
		if err != nil {
			return "", "", fmt.Errorf("no directory to keep helm in (set KDEDUP_HELM_CACHE or KDEDUP_HELM): %w", err)
		}
		dir = filepath.Join(c, "kdedup")
	}
	bin, err := filepath.Abs(filepath.Join(dir, "helm-"+helmVersion))
	if err != nil {
		return "", "", fmt.Errorf("helm's directory: %w", err)
	}
	path = filepath.Join(bin, "helm")
	if _, err := os.Stat(path); err == nil {
		return path, "", nil
	}
	mod := helmModule + "@" + helmVersion
	cmd := exec.Command("go", "install", mod)
	cmd.Env = append(os.Environ(), "GOBIN="+bin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if fetchFailed(string(out)) {
			return "", fmt.Sprintf("SKIP: the Go toolchain could not fetch %s (no network?), so the chart is not tested:\n%s", mod, out), nil
		}
		return "", "", fmt.Errorf("go install %s: %w\n%s", mod, err, out)
	}
	return path, "", nil
}

// fetchFailed reports whether go install's output says that a module could
// not be downloaded, as opposed to a build that failed.
func fetchFailed(out string) bool {
	for _, s := range []string{
		"dial tcp", "no such host", "connection refused", "i/o timeout",
		"network is unreachable", "TLS handshake timeout", "connection reset",
		"module lookup disabled", "proxyconnect", "Client.Timeout exceeded",
	} {
		if strings.Contains(out, s) {
			return true
		}
	}
	return false
}

// runHelm runs helm with args in this package's directory and returns its
// standard output; the error holds its standard error.
func runHelm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(helmBinary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// template renders the chart as release prod in namespace streams, with
// the values files given (none: the defaults).
func template(t *testing.T, values ...string) ([]byte, error) {
	t.Helper()
	args := []string{"template", releaseName, chartDir, "--namespace", namespace}
	for _, v := range values {
		args = append(args, "--values", v)
	}
	return runHelm(t, args...)
}

// withValues returns the name of a values case (its file's name, or
// "default") and helm's args with that file added, if any.
func withValues(values string, args ...string) (string, []string) {
	if values == "" {
		return "default", args
	}
	return filepath.Base(values), append(args, "--values", values)
}

// valuesCases are the values files the chart is linted and rendered with:
// none (the defaults), then every file of kdedup/ci.
func valuesCases(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no values files in %s/ci", chartDir)
	}
	return append([]string{""}, files...)
}

func TestLint(t *testing.T) {
	for _, values := range valuesCases(t) {
		name, args := withValues(values, "lint", "--strict", chartDir, "--namespace", namespace)
		t.Run(name, func(t *testing.T) {
			out, err := runHelm(t, args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !bytes.Contains(out, []byte("0 chart(s) failed")) {
				t.Fatalf("helm lint did not report success:\n%s", out)
			}
		})
	}
}

// TestBadValues renders every testdata/*.bad.yaml, which must fail with the
// message on its first line ("# want: MESSAGE").
func TestBadValues(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.bad.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/*.bad.yaml")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".bad.yaml"), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(b), "\n")
			want, ok := strings.CutPrefix(first, "# want: ")
			if !ok || want == "" {
				t.Fatalf("%s: the first line must be \"# want: <the expected error>\", got %q", f, first)
			}
			out, err := template(t, f)
			if err == nil {
				t.Fatalf("helm template accepted %s; want an error containing %q; it rendered:\n%s", f, want, out)
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("helm template failed, but not with %q:\n%v", want, err)
			}
		})
	}
}

func TestFetchFailed(t *testing.T) {
	for _, tc := range []struct {
		name string
		out  string
		want bool
	}{
		{"no such host", `go: helm.sh/helm/v3/cmd/helm@v3.22.0: helm.sh/helm/v3@v3.22.0: Get "https://proxy.golang.org/helm.sh/helm/v3/@v/v3.22.0.zip": dial tcp: lookup proxy.golang.org: no such host`, true},
		{"GOPROXY off", `go: helm.sh/helm/v3/cmd/helm@v3.22.0: module lookup disabled by GOPROXY=off`, true},
		{"TLS timeout", `go: helm.sh/helm/v3/cmd/helm@v3.22.0: Get "https://proxy.golang.org/...": net/http: TLS handshake timeout`, true},
		{"compile error", "# helm.sh/helm/v3/pkg/action\npkg/action/install.go:12:2: undefined: foo", false},
		{"toolchain too old", "go: go.mod requires go >= 1.27 (running go 1.26.8; GOTOOLCHAIN=local)", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fetchFailed(tc.out); got != tc.want {
				t.Errorf("fetchFailed(%q) = %v, want %v", tc.out, got, tc.want)
			}
		})
	}
}

// TestNotes renders NOTES.txt, which helm template leaves out (helm
// install shows it, and cannot run here without a cluster): a copy of the
// chart wraps it in a template of its own that helm template renders.
func TestNotes(t *testing.T) {
	notes, err := os.ReadFile(filepath.Join(chartDir, "templates", "NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	chart := filepath.Join(t.TempDir(), "kdedup")
	if err := os.CopyFS(chart, os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	wrap := map[string]string{
		"_notes.tpl": `{{- define "kdedup.test.notes" -}}` + string(notes) + `{{- end -}}`,
		"notes.yaml": `notes: {{ include "kdedup.test.notes" . | toJson }}`,
	}
	for name, text := range wrap {
		if err := os.WriteFile(filepath.Join(chart, "templates", name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, values := range valuesCases(t) {
		name, args := withValues(values, "template", releaseName, chart, "--namespace", namespace, "--show-only", "templates/notes.yaml")
		t.Run(name, func(t *testing.T) {
			out, err := runHelm(t, args...)
			if err != nil {
				t.Fatal(err)
			}
			var doc struct {
				Notes string `json:"notes"`
			}
			if err := yaml.Unmarshal(out, &doc); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			for _, want := range []string{"kubectl -n " + namespace + " get pods", releaseName + "-kdedup-0", "/readyz"} {
				if !strings.Contains(doc.Notes, want) {
					t.Errorf("the notes lack %q:\n%s", want, doc.Notes)
				}
			}
		})
	}
}
