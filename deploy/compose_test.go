// Package deploy holds the docker-compose deployment's files and a test
// that checks them without a Docker engine.
package deploy

import (
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/kdedup/kdedup/config"
)

type compose struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Build       any               `yaml:"build"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Volumes     []string          `yaml:"volumes"`
		Ports       []string          `yaml:"ports"`
		DependsOn   map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
	} `yaml:"services"`
}

// TestCompose parses docker-compose.yml and checks that it runs Apache
// Kafka in KRaft mode with single-replica transaction and offset topics, and
// kdedup built from this repository with the example configuration mounted
// where its command reads it.
func TestCompose(t *testing.T) {
	b, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	k, ok := c.Services["kafka"]
	if !ok || !strings.HasPrefix(k.Image, "apache/kafka:") {
		t.Fatalf("kafka service with the official image: %+v", k)
	}
	for key, want := range map[string]string{
		"KAFKA_PROCESS_ROLES":                            "broker,controller",
		"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
		"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         "1",
		"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":            "1",
	} {
		if got := k.Environment[key]; got != want {
			t.Errorf("kafka %s = %q, want %q", key, got, want)
		}
	}
	d, ok := c.Services["kdedup"]
	if !ok || d.Build == nil {
		t.Fatalf("kdedup service built from the repository: %+v", d)
	}
	if d.DependsOn["kafka"].Condition != "service_healthy" {
		t.Errorf("kdedup does not wait for a healthy kafka")
	}
	mounted := ""
	for _, v := range d.Volumes {
		if parts := strings.Split(v, ":"); len(parts) >= 2 && parts[1] == "/etc/kdedup/kdedup.yaml" {
			mounted = parts[0]
		}
	}
	if mounted == "" || len(d.Command) < 3 || d.Command[len(d.Command)-1] != "/etc/kdedup/kdedup.yaml" {
		t.Fatalf("configuration not mounted where the command reads it: volumes %v, command %v", d.Volumes, d.Command)
	}
	// The mounted example configuration is valid and points at the kafka
	// service.
	cfg, err := config.Load(config.LoadOptions{File: "../" + strings.TrimPrefix(mounted, "./")})
	if err != nil {
		t.Fatalf("%s: %v", mounted, err)
	}
	if len(cfg.Brokers) != 1 || cfg.Brokers[0] != "kafka:9092" {
		t.Errorf("example configuration brokers %v, want the compose service kafka:9092", cfg.Brokers)
	}
}

// mounts returns a service's bind mounts of repository files: container
// path to the repository path (relative to the repository root), failing
// on one whose file is missing.
func mounts(t *testing.T, service string, volumes []string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, v := range volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || !strings.HasPrefix(parts[0], "./") {
			continue // a named volume
		}
		if _, err := os.Stat(filepath.Join("..", parts[0])); err != nil {
			t.Errorf("%s mounts %s, which does not exist: %v", service, parts[0], err)
		}
		m[parts[1]] = strings.TrimPrefix(parts[0], "./")
	}
	return m
}

// resolve maps a container path to the repository file mounted there (a
// file, or one under a mounted directory), or "".
func resolve(m map[string]string, container string) string {
	for dst, src := range m {
		if container == dst {
			return src
		}
		if rel, ok := strings.CutPrefix(container, dst+"/"); ok {
			return path.Join(src, rel)
		}
	}
	return ""
}

// TestComposeMonitoring checks the prometheus and grafana services:
// Prometheus reads the mounted prometheus.yml, which scrapes the kdedup
// service's admin port and loads the mounted alerts.yml; Grafana's
// provisioning (mounted) has a Prometheus data source at the prometheus
// service and a dashboard provider whose folder holds the mounted
// deploy/grafana/kdedup.json.
func TestComposeMonitoring(t *testing.T) {
	b, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}

	p, ok := c.Services["prometheus"]
	if !ok || !strings.HasPrefix(p.Image, "prom/prometheus:") {
		t.Fatalf("prometheus service with the official image: %+v", p)
	}
	pm := mounts(t, "prometheus", p.Volumes)
	cfgPath := "/etc/prometheus/prometheus.yml"
	for _, a := range p.Command {
		if v, ok := strings.CutPrefix(a, "--config.file="); ok {
			cfgPath = v
		}
	}
	if src := resolve(pm, cfgPath); src != "deploy/prometheus/prometheus.yml" {
		t.Fatalf("prometheus reads %s, which mounts %q, want deploy/prometheus/prometheus.yml", cfgPath, src)
	}
	var pc struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	pb, err := os.ReadFile("prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(pb, &pc); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	var rules []string
	for _, r := range pc.RuleFiles {
		rules = append(rules, resolve(pm, r))
	}
	if !slices.Contains(rules, "deploy/prometheus/alerts.yml") {
		t.Errorf("prometheus rule_files %v mount %v, want deploy/prometheus/alerts.yml", pc.RuleFiles, rules)
	}
	// The scrape job kdedup (KdedupDown reads up{job="kdedup"}) targets
	// the kdedup service on the port of its admin_addr.
	cfg, err := config.Load(config.LoadOptions{File: "kdedup.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(cfg.AdminAddr, ":")
	want := "kdedup:" + port
	found := false
	for _, sc := range pc.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			found = found || sc.JobName == "kdedup" && slices.Contains(st.Targets, want)
		}
	}
	if !found {
		t.Errorf("no scrape job kdedup targets %s: %+v", want, pc.ScrapeConfigs)
	}

	g, ok := c.Services["grafana"]
	if !ok || !strings.HasPrefix(g.Image, "grafana/grafana:") {
		t.Fatalf("grafana service with the official image: %+v", g)
	}
	gm := mounts(t, "grafana", g.Volumes)
	prov := resolve(gm, "/etc/grafana/provisioning")
	if prov != "deploy/grafana/provisioning" {
		t.Fatalf("grafana's /etc/grafana/provisioning mounts %q, want deploy/grafana/provisioning", prov)
	}
	var ds struct {
		Datasources []struct {
			Type string `yaml:"type"`
			URL  string `yaml:"url"`
		} `yaml:"datasources"`
	}
	readYAML(t, "grafana/provisioning/datasources/prometheus.yml", &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("grafana data sources %+v, want prometheus at http://prometheus:9090", ds.Datasources)
	}
	var dp struct {
		Providers []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, "grafana/provisioning/dashboards/kdedup.yml", &dp)
	if len(dp.Providers) != 1 || dp.Providers[0].Type != "file" {
		t.Fatalf("grafana dashboard providers %+v, want one of type file", dp.Providers)
	}
	if src := resolve(gm, dp.Providers[0].Options.Path+"/kdedup.json"); src != "deploy/grafana/kdedup.json" {
		t.Errorf("the dashboard provider's folder %s holds %q, want deploy/grafana/kdedup.json", dp.Providers[0].Options.Path, src)
	}
}

func readYAML(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}
