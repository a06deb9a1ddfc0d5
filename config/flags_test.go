package config

import (
	"flag"
	"io"
	"testing"
	"time"
)

func TestFlagsOverrideEnvAndFile(t *testing.T) {
	fs := flag.NewFlagSet("kdedup", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := BindFlags(fs)
	err := fs.Parse([]string{
		"--config", "testdata/minimal.good.yaml",
		"--commit-interval", "250ms",
		"--set", "streams[0].ttl=3h",
		"--brokers", "x:1,y:2",
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(f.Options([]string{"KDEDUP_COMMIT_INTERVAL=1s", "KDEDUP_GROUP=from-env"}))
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(c.CommitInterval) != 250*time.Millisecond || c.Group != "from-env" || time.Duration(c.Streams[0].TTL) != 3*time.Hour {
		t.Errorf("commit_interval %v, group %q, ttl %v", c.CommitInterval, c.Group, c.Streams[0].TTL)
	}
	if len(c.Brokers) != 2 || c.Brokers[1] != "y:2" {
		t.Errorf("brokers %q", c.Brokers)
	}
	if err := fs.Parse([]string{"--set", "no-equals-sign"}); err == nil {
		t.Error("--set without = accepted")
	}
}
