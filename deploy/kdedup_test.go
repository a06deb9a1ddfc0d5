package deploy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The tests of this file's helpers run the real kdedup binary, built once
// into binDir, against in-process kfake brokers on free ports.
var (
	binDir   string
	buildOne sync.Once
	binary   string
	buildErr error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// kdedupBinary builds ./cmd/kdedup once per test run.
func kdedupBinary(t *testing.T) string {
	t.Helper()
	buildOne.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "kdedup-deploy")
		if buildErr != nil {
			return
		}
		binary = filepath.Join(binDir, "kdedup")
		out, err := exec.Command("go", "build", "-o", binary, "../cmd/kdedup").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/kdedup: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// freeAddr returns 127.0.0.1:port with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// poll calls cond until it returns "" (done) or within passes; it fails
// with cond's last answer, which says what was still missing.
func poll(t *testing.T, within time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		missing := cond()
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, %s: %s", within, what, missing)
		}
		time.Sleep(200 * time.Millisecond) // polling interval of a condition with a deadline
	}
}

// inputTopic is the input of the stream the tests' kdedup runs.
const inputTopic = "push-events"

// newBroker starts an in-process broker on a free port with the input
// topic (3 partitions).
func newBroker(t *testing.T) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, inputTopic), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// instance is one kdedup process's configuration and, while it runs, the
// process.
type instance struct {
	t        *testing.T
	bin      string
	cfgPath  string
	stateDir string
	admin    string // host:port of admin_addr
	logPath  string
	cmd      *exec.Cmd
	done     chan struct{}
}

// newInstance writes the configuration of a kdedup on brokers with its
// admin endpoints on a free port.
func newInstance(t *testing.T, brokers []string, instanceID string) *instance {
	t.Helper()
	dir := t.TempDir()
	in := &instance{t: t, bin: kdedupBinary(t), stateDir: filepath.Join(dir, "state"), admin: freeAddr(t),
		cfgPath: filepath.Join(dir, "kdedup.yaml"), logPath: filepath.Join(dir, "kdedup.log")}
	cfg := fmt.Sprintf(`brokers: [%s]
group: kdedup-metrics-test
instance_id: %s
state_dir: %s
audit_topic: dedup.audit
guarantee: exactly_once
commit_interval: 100ms
admin_addr: %s
log_level: info
streams:
  - name: push
    input: %s
    output: %s.deduped
    ttl: 1h
    key:
      - header: Idempotency-Key
`, strings.Join(brokers, ", "), instanceID, in.stateDir, in.admin, inputTopic, inputTopic)
	if err := os.WriteFile(in.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.stop)
	return in
}

// start starts the process.
func (in *instance) start() {
	in.t.Helper()
	log, err := os.OpenFile(in.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		in.t.Fatal(err)
	}
	in.cmd = exec.Command(in.bin, "run", "--config", in.cfgPath)
	in.cmd.Stdout, in.cmd.Stderr = log, log
	// The tests' own KDEDUP_* settings are no configuration of kdedup's.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KDEDUP_") {
			in.cmd.Env = append(in.cmd.Env, kv)
		}
	}
	if err := in.cmd.Start(); err != nil {
		log.Close()
		in.t.Fatal(err)
	}
	in.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		log.Close()
		close(done)
	}(in.cmd, in.done)
}

// stop ends the process with SIGTERM (SIGKILL after 30s) and waits for it.
func (in *instance) stop() {
	if in.cmd == nil {
		return
	}
	_ = in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-in.done:
	case <-time.After(30 * time.Second):
		_ = in.cmd.Process.Kill()
		<-in.done
	}
	in.cmd = nil
}

// logTail returns the end of the process's log, for failure messages.
func (in *instance) logTail() string {
	b, _ := os.ReadFile(in.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// get returns the status and body of an admin endpoint; status 0 when it
// does not answer.
func (in *instance) get(path string) (int, string) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + in.admin + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitReady waits for /readyz to answer 200.
func (in *instance) waitReady(within time.Duration) {
	in.t.Helper()
	poll(in.t, within, "kdedup ready", func() string {
		select {
		case <-in.done:
			in.t.Fatalf("kdedup exited; log:\n%s", in.logTail())
		default:
		}
		if code, body := in.get("/readyz"); code != http.StatusOK {
			return fmt.Sprintf("/readyz %d %s", code, strings.TrimSpace(body))
		}
		return ""
	})
}

// sample is one line of the exposition format.
type sample struct {
	name   string
	labels string
	value  float64
}

// scrape returns the samples of /metrics.
func (in *instance) scrape() ([]sample, error) {
	code, body := in.get("/metrics")
	if code != http.StatusOK {
		return nil, fmt.Errorf("/metrics %d: %s", code, body)
	}
	return parseExposition(body), nil
}

// parseExposition reads the samples of Prometheus' text format.
func parseExposition(body string) []sample {
	var out []sample
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var s sample
		rest := ""
		if i := strings.IndexAny(line, "{ "); i >= 0 && line[i] == '{' {
			j := strings.LastIndex(line, "}")
			s.name, s.labels, rest = line[:i], line[i+1:j], line[j+1:]
		} else if i >= 0 {
			s.name, rest = line[:i], line[i:]
		}
		fields := strings.Fields(rest)
		if len(fields) > 0 {
			s.value, _ = strconv.ParseFloat(fields[0], 64)
		}
		out = append(out, s)
	}
	return out
}

// sum adds the values of the samples named name.
func sum(ss []sample, name string) float64 {
	v := 0.0
	for _, s := range ss {
		if s.name == name {
			v += s.value
		}
	}
	return v
}

// produce sends n records to the input, keys k<from>... with every fourth
// record a copy of the one before (a duplicate for kdedup).
func produce(t *testing.T, brokers []string, from, n int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(inputTopic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	recs := make([]*kgo.Record, 0, n)
	for i := range n {
		k := from + i
		if i%4 == 3 {
			k--
		}
		key := fmt.Sprintf("k%d", k)
		recs = append(recs, &kgo.Record{Key: []byte(key), Value: fmt.Appendf(nil, `{"n":%d}`, k),
			Headers: []kgo.RecordHeader{{Key: "Idempotency-Key", Value: []byte(key)}}})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// waitDecided waits until the instance's kdedup_events_in_total is n.
func (in *instance) waitDecided(n int) {
	in.t.Helper()
	poll(in.t, 60*time.Second, fmt.Sprintf("%d events decided", n), func() string {
		ss, err := in.scrape()
		if err != nil {
			return err.Error()
		}
		if got := sum(ss, "kdedup_events_in_total"); got != float64(n) {
			return fmt.Sprintf("kdedup_events_in_total %v", got)
		}
		return ""
	})
}

// runWithRestore runs the scenario whose metrics cover what the dashboard
// shows: kdedup decides a first batch, stops, loses its local state and
// starts again, restoring it from the changelog (the restore gauges), then
// decides a second batch. It returns with the instance running.
func runWithRestore(t *testing.T, brokers []string, in *instance) {
	t.Helper()
	in.start()
	in.waitReady(90 * time.Second)
	produce(t, brokers, 0, 200)
	in.waitDecided(200)
	in.stop()
	// Without its state kdedup restores it from the changelog on start.
	if err := os.RemoveAll(filepath.Join(in.stateDir, "state")); err != nil {
		t.Fatal(err)
	}
	in.start()
	in.waitReady(90 * time.Second)
	produce(t, brokers, 1000, 100)
	in.waitDecided(100)
}
