package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const (
	dashboardFile = "grafana/kdedup.json"
	alertsFile    = "prometheus/alerts.yml"
)

// dashboard is what the tests read of kdedup.json.
type dashboard struct {
	SchemaVersion int    `json:"schemaVersion"`
	UID           string `json:"uid"`
	Title         string `json:"title"`
	Panels        []struct {
		Title      string `json:"title"`
		Type       string `json:"type"`
		Datasource *struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// query is one PromQL expression of the dashboard or the alert rules.
type query struct {
	where string // panel or alert
	expr  string
}

func dashboardQueries(t *testing.T) []query {
	t.Helper()
	var qs []query
	for _, p := range readDashboard(t).Panels {
		for _, tg := range p.Targets {
			qs = append(qs, query{"panel " + p.Title, tg.Expr})
		}
	}
	return qs
}

// alertRules is what the tests read of alerts.yml.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readAlerts(t *testing.T) alertRules {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var a alertRules
	if err := yaml.Unmarshal(b, &a); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	return a
}

func alertQueries(t *testing.T) []query {
	t.Helper()
	var qs []query
	for _, g := range readAlerts(t).Groups {
		for _, r := range g.Rules {
			qs = append(qs, query{"alert " + r.Alert, r.Expr})
		}
	}
	return qs
}

var (
	promString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promMatchers = regexp.MustCompile(`\{[^{}]*\}`)
	promRange    = regexp.MustCompile(`\[[^\[\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	promKeywords = map[string]bool{
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"bool": true, "and": true, "or": true, "unless": true, "offset": true, "atan2": true,
		"inf": true, "nan": true, "Inf": true, "NaN": true,
	}
)

// metricNames returns the metric names expr selects. A light PromQL
// reader, enough for kdedup's queries: strings, label matchers, ranges
// and grouping clauses are cut out; what remains of the identifiers,
// bar keywords and function names (those followed by "("), are metrics.
func metricNames(expr string) []string {
	s := promString.ReplaceAllString(expr, `""`)
	s = promMatchers.ReplaceAllString(s, " ")
	s = promRange.ReplaceAllString(s, " ")
	s = promGrouping.ReplaceAllString(s, " ")
	var names []string
	for _, loc := range promIdent.FindAllStringIndex(s, -1) {
		id := s[loc[0]:loc[1]]
		if loc[0] > 0 && (s[loc[0]-1] == '$' || s[loc[0]-1] >= '0' && s[loc[0]-1] <= '9' || s[loc[0]-1] == '.') {
			continue // a variable, or a number's exponent or suffix
		}
		if promKeywords[id] || strings.HasPrefix(strings.TrimLeft(s[loc[1]:], " \t\n"), "(") {
			continue
		}
		if !slices.Contains(names, id) {
			names = append(names, id)
		}
	}
	return names
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`histogram_quantile(0.99, sum by (le) (rate(kdedup_commit_seconds_bucket{instance=~"$instance"}[$__rate_interval])))`: {"kdedup_commit_seconds_bucket"},
		`deriv(sum by (instance) (kdedup_consumer_lag)[10m:1m]) > 0 and sum by (instance) (kdedup_consumer_lag) > 1e3`:        {"kdedup_consumer_lag"},
		`1 - kdedup_state_fs_avail_bytes{dir="a{b}"} / on (instance) kdedup_state_fs_size_bytes`:                              {"kdedup_state_fs_avail_bytes", "kdedup_state_fs_size_bytes"},
		`up{job="kdedup"} == 0`: {"up"},
	} {
		if got := metricNames(expr); !slices.Equal(got, want) {
			t.Errorf("metricNames(%s) = %v, want %v", expr, got, want)
		}
	}
}

// TestDashboard checks the dashboard's frame: the data source and
// instance variables, every panel on the data source variable, and the
// panels the operations documentation refers to.
func TestDashboard(t *testing.T) {
	d := readDashboard(t)
	if d.SchemaVersion < 36 || d.UID == "" || d.Title == "" {
		t.Errorf("schemaVersion %d, uid %q, title %q", d.SchemaVersion, d.UID, d.Title)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["DS_PROMETHEUS"] != "datasource" || vars["instance"] != "query" {
		t.Errorf("variables %v: want DS_PROMETHEUS (datasource) and instance (query)", vars)
	}
	var titles []string
	for _, p := range d.Panels {
		titles = append(titles, p.Title)
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" {
			t.Errorf("panel %q does not use ${DS_PROMETHEUS}", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if !strings.Contains(tg.Expr, `instance=~"$instance"`) {
				t.Errorf("panel %q query %s ignores $instance", p.Title, tg.Expr)
			}
		}
	}
	for _, want := range []string{"Readiness", "Throughput (events in/s)", "Decisions per reason", "Consumer lag per partition",
		"Commit latency", "Aborted transactions", "Session rebuilds", "Restore progress", "State keys", "State bytes",
		"State disk used", "Kafka produce/fetch bytes"} {
		if !slices.Contains(titles, want) {
			t.Errorf("no panel %q (panels: %v)", want, titles)
		}
	}
}

// TestAlertsAnnotated checks every alert's severity and annotations.
func TestAlertsAnnotated(t *testing.T) {
	n := 0
	for _, g := range readAlerts(t).Groups {
		for _, r := range g.Rules {
			n++
			if sev := r.Labels["severity"]; sev != "warning" && sev != "critical" {
				t.Errorf("alert %s severity %q", r.Alert, sev)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s lacks a summary or description", r.Alert)
			}
		}
	}
	if n == 0 {
		t.Fatal("no alert rules")
	}
}

// prometheusMade are the series Prometheus itself makes, not kdedup.
var prometheusMade = map[string]bool{"up": true}

// exported reports whether name is among the scraped names: itself, or a
// histogram or summary whose _bucket, _sum or _count was scraped.
func exported(names map[string]bool, name string) bool {
	return names[name] || names[name+"_bucket"] || names[name+"_count"]
}

// TestQueriedMetricsExported runs kdedup (the binary) on an in-process
// broker through decisions, a restart that restores the state from the
// changelog and more decisions, and checks that every metric a dashboard
// panel or an alert rule queries is among those its /metrics exports.
func TestQueriedMetricsExported(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs kdedup")
	}
	queries := append(dashboardQueries(t), alertQueries(t)...)
	wanted := map[string][]string{} // metric: where
	for _, q := range queries {
		names := metricNames(q.expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric found in %s", q.where, q.expr)
		}
		for _, n := range names {
			wanted[n] = append(wanted[n], q.where)
		}
	}
	start := time.Now()
	b := newBroker(t)
	in := newInstance(t, b.ListenAddrs(), "kdedup-1")
	runWithRestore(t, b.ListenAddrs(), in)
	scraped := map[string]bool{}
	poll(t, 30*time.Second, "every queried metric exported", func() string {
		ss, err := in.scrape()
		if err != nil {
			return err.Error()
		}
		for _, s := range ss {
			scraped[s.name] = true
		}
		var missing []string
		for n, where := range wanted {
			if !prometheusMade[n] && !exported(scraped, n) {
				missing = append(missing, fmt.Sprintf("%s (%s)", n, strings.Join(where, ", ")))
			}
		}
		sort.Strings(missing)
		return strings.Join(missing, "; ")
	})
	// Everything produced is decided and committed: the lag of the three
	// input partitions, all assigned to this instance, comes down to 0.
	poll(t, 30*time.Second, "the lag of the 3 partitions at 0", func() string {
		ss, err := in.scrape()
		if err != nil {
			return err.Error()
		}
		var lag []sample
		for _, s := range ss {
			if s.name == "kdedup_consumer_lag" {
				lag = append(lag, s)
			}
		}
		if len(lag) != 3 || sum(lag, "kdedup_consumer_lag") != 0 {
			return fmt.Sprintf("kdedup_consumer_lag %v", lag)
		}
		return ""
	})
	t.Logf("%d queried metrics all exported; %d metrics scraped; took %v", len(wanted), len(scraped), time.Since(start).Round(time.Second))
}
