package consumer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kgoLines are the JSON lines written to buf.
func kgoLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

// syncBuffer is a bytes.Buffer that franz-go's goroutines can log into
// at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// TestKgoLogger: franz-go's log lines reach the processor's zerolog
// logger at their own level with "component":"kgo" and their key-values,
// and franz-go is asked for its debug lines at zerolog's debug and trace,
// for warnings and errors at info (its info lines are chatty), and for
// errors only above.
func TestKgoLogger(t *testing.T) {
	for zl, want := range map[zerolog.Level]kgo.LogLevel{
		zerolog.TraceLevel: kgo.LogLevelDebug,
		zerolog.DebugLevel: kgo.LogLevelDebug,
		zerolog.InfoLevel:  kgo.LogLevelWarn,
		zerolog.WarnLevel:  kgo.LogLevelError,
		zerolog.ErrorLevel: kgo.LogLevelError,
		zerolog.Disabled:   kgo.LogLevelError,
	} {
		if got := newKgoLogger(zerolog.New(nil).Level(zl)).Level(); got != want {
			t.Errorf("zerolog %v: franz-go level %v, want %v", zl, got, want)
		}
	}

	var buf bytes.Buffer
	log := zerolog.New(&buf).Level(zerolog.DebugLevel).With().Str("instance", "i1").Logger()
	var l kgo.Logger = newKgoLogger(log)
	levels := map[kgo.LogLevel]string{
		kgo.LogLevelError: "error",
		kgo.LogLevelWarn:  "warn",
		kgo.LogLevelInfo:  "info",
		kgo.LogLevelDebug: "debug",
	}
	for kl, name := range levels {
		l.Log(kl, "line "+name, "broker", 1, "err", errors.New("boom"))
	}
	lines := kgoLines(t, &buf)
	if len(lines) != len(levels) {
		t.Fatalf("%d lines, want %d: %s", len(lines), len(levels), buf.String())
	}
	for _, m := range lines {
		name, _ := m["level"].(string)
		if m["message"] != "line "+name || m["component"] != "kgo" || m["instance"] != "i1" ||
			m["broker"] != float64(1) || m["err"] != "boom" {
			t.Errorf("line %v", m)
		}
	}

	// Above debug, zerolog drops the debug and info lines.
	buf.Reset()
	l = newKgoLogger(log.Level(zerolog.WarnLevel))
	for kl := range levels {
		l.Log(kl, "x")
	}
	if lines := kgoLines(t, &buf); len(lines) != 2 {
		t.Errorf("at warn: %d lines, want error and warn: %s", len(lines), buf.String())
	}
}

// TestKgoLoggerClient: a franz-go client given the processor's logger
// writes its own lines to zerolog with "component":"kgo".
func TestKgoLoggerClient(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var buf syncBuffer
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.WithLogger(newKgoLogger(zerolog.New(&buf).Level(zerolog.DebugLevel))))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	b := buf.bytes()
	lines := kgoLines(t, bytes.NewBuffer(b))
	if len(lines) == 0 {
		t.Fatal("franz-go logged nothing")
	}
	for _, m := range lines {
		if m["component"] != "kgo" || m["level"] != "debug" && m["level"] != "info" && m["level"] != "warn" && m["level"] != "error" {
			t.Errorf("line %v", m)
		}
	}
}
