package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.yaml.in/yaml/v3"
)

// lookTool returns the path of a Prometheus tool, or skips the test.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("SKIPPED: %s is not on the PATH (Debian: apt-get install -y prometheus, which brings promtool)", name)
	}
	return p
}

func runTool(t *testing.T, dir, tool string, args ...string) {
	t.Helper()
	cmd := exec.Command(tool, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(tool), strings.Join(args, " "), err, out)
	}
	t.Logf("%s %s:\n%s", filepath.Base(tool), strings.Join(args, " "), out)
}

// TestAlertRules checks alerts.yml with promtool and runs its unit tests
// (alerts_test.yml: each alert fires when its condition holds, and not
// otherwise), and checks prometheus.yml with its rule file path pointed at
// the repository's copy.
func TestAlertRules(t *testing.T) {
	promtool := lookTool(t, "promtool")
	runTool(t, "prometheus", promtool, "check", "rules", "alerts.yml")
	runTool(t, "prometheus", promtool, "test", "rules", "alerts_test.yml")

	b, err := os.ReadFile("prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.ReplaceAll(string(b), "/etc/prometheus/alerts.yml", abs)
	if cfg == string(b) {
		t.Fatal("prometheus.yml does not read /etc/prometheus/alerts.yml, where docker-compose.yml mounts alerts.yml")
	}
	local := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(local, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	runTool(t, ".", promtool, "check", "config", local)
}

// shortFor is every alert's "for" in the real-Prometheus test.
const shortFor = "3s"

// shortenedRules writes a copy of alerts.yml with every "for" shortFor.
func shortenedRules(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for _, g := range doc["groups"].([]any) {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			r.(map[string]any)["for"] = shortFor
		}
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// promAPI asks a Prometheus HTTP API endpoint and decodes its data.
func promAPI(base, path string, params url.Values, data any) error {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(base + path + "?" + params.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %d %s", path, resp.StatusCode, b)
	}
	if r.Status != "success" {
		return fmt.Errorf("%s: %s", path, r.Error)
	}
	return json.Unmarshal(r.Data, data)
}

// dashboardVars replaces the Grafana variables of a panel's query:
// $instance by the instance's address (a regular expression for =~,
// escaped again inside PromQL's double-quoted string), the intervals by a
// window of several 1s scrapes.
func dashboardVars(expr, instance string) string {
	r := strings.NewReplacer("$__rate_interval", "10s", "$__interval", "10s", "$__range", "1m",
		"$instance", strings.ReplaceAll(regexp.QuoteMeta(instance), `\`, `\\`))
	return r.Replace(expr)
}

// neverFences makes c answer every InitProducerID with a retriable
// error, as a transaction coordinator that never finishes loading: a
// kdedup (exactly_once) on it starts and serves /metrics, but its session
// never gets past fencing its transactional id, so it never becomes
// ready. (A broker that refuses group joins would not do: the processor
// reports ready on an empty poll before it was assigned anything.)
func neverFences(c *kfake.Cluster) {
	c.ControlKey(kmsg.InitProducerID.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
		resp.ErrorCode = kerr.CoordinatorLoadInProgress.Code
		return resp, nil, true
	})
}

// TestPrometheusScrapesKdedup runs a real Prometheus (the Debian package's
// 2.42 here) scraping two kdedup binaries every second and evaluating
// alerts.yml (every "for" shortened): one kdedup goes through decisions, a
// restart with a restore and more decisions; the other never gets its
// transactional id initialised. Every query of the dashboard must return data for the first, and
// KdedupNotReady must fire for the second and not for the first.
// make test-prometheus runs it (KDEDUP_TEST_PROMETHEUS=1).
func TestPrometheusScrapesKdedup(t *testing.T) {
	if os.Getenv("KDEDUP_TEST_PROMETHEUS") == "" {
		t.Skip("SKIPPED: set KDEDUP_TEST_PROMETHEUS=1 (make test-prometheus) to run Prometheus against kdedup")
	}
	prom := lookTool(t, "prometheus")
	began := time.Now()

	b := newBroker(t)
	a := newInstance(t, b.ListenAddrs(), "kdedup-1")
	stuck := newBroker(t)
	neverFences(stuck)
	n := newInstance(t, stuck.ListenAddrs(), "kdedup-stuck")

	dir := t.TempDir()
	rules := filepath.Join(dir, "alerts.yml")
	shortenedRules(t, rules)
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: kdedup
    static_configs:
      - targets: [%q, %q]
`, rules, a.admin, n.admin)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	promAddr := freeAddr(t)
	promLog, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer promLog.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, prom, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = promLog, promLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	base := "http://" + promAddr
	logTail := func() string {
		b, _ := os.ReadFile(promLog.Name())
		return string(b)
	}
	poll(t, 30*time.Second, "Prometheus ready", func() string {
		resp, err := http.Get(base + "/-/ready")
		if err != nil {
			return err.Error()
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return resp.Status + "\n" + logTail()
		}
		return ""
	})

	n.start()
	runWithRestore(t, b.ListenAddrs(), a)

	// Every panel's query has data for the first instance.
	queries := dashboardQueries(t)
	poll(t, 60*time.Second, "every dashboard query answered with data", func() string {
		var empty []string
		for _, q := range queries {
			expr := dashboardVars(q.expr, a.admin)
			var res struct {
				Result []json.RawMessage `json:"result"`
			}
			if err := promAPI(base, "/api/v1/query", url.Values{"query": {expr}}, &res); err != nil {
				return fmt.Sprintf("%s: %v", q.where, err)
			}
			if len(res.Result) == 0 {
				empty = append(empty, fmt.Sprintf("%s: %s", q.where, expr))
			}
		}
		sort.Strings(empty)
		return strings.Join(empty, "\n")
	})
	t.Logf("all %d dashboard queries have data (%v in)", len(queries), time.Since(began).Round(time.Second))

	// The instance that cannot fence is not ready, and KdedupNotReady
	// fires for it alone.
	if code, _ := n.get("/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("the instance that cannot fence answers /readyz %d; log:\n%s", code, n.logTail())
	}
	poll(t, 60*time.Second, "KdedupNotReady firing for "+n.admin+" only", func() string {
		var res struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		}
		if err := promAPI(base, "/api/v1/alerts", nil, &res); err != nil {
			return err.Error()
		}
		firing := map[string]bool{}
		var all []string
		for _, al := range res.Alerts {
			all = append(all, fmt.Sprintf("%s{instance=%s} %s", al.Labels["alertname"], al.Labels["instance"], al.State))
			if al.Labels["alertname"] == "KdedupNotReady" && al.State == "firing" {
				firing[al.Labels["instance"]] = true
			}
		}
		if !firing[n.admin] || firing[a.admin] {
			return fmt.Sprintf("alerts: %v", all)
		}
		return ""
	})
	t.Logf("KdedupNotReady fired for the instance that cannot fence; whole test %v", time.Since(began).Round(time.Second))
}
