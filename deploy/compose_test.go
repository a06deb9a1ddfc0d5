// Package deploy holds the docker-compose deployment's files and a test
// that checks them without a Docker engine.
package deploy

import (
	"os"
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
