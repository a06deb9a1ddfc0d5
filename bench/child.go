package bench

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kdedup/kdedup/internal/e2e"
)

// child is a pipe running as a child process.
type child struct {
	name string // "raw pipe" or "kdedup"
	cmd  *exec.Cmd
	tail *tail
	logf *os.File
	done chan struct{} // closed when it exited
	err  error         // Wait's, once done
}

// startChild starts pr's pipe: `bench-pipe` for the raw pipe, `run` with
// a configuration written to the scratch directory for kdedup. Its
// output goes to a log file there.
func (b *bencher) startChild(pr *pipeRun, round int) (*child, error) {
	base := filepath.Join(b.dir, fmt.Sprintf("round%d-%s", round, pr.kind))
	var args, env []string
	name := "raw pipe"
	switch pr.kind {
	case raw:
		args = []string{"bench-pipe", "--brokers", strings.Join(b.brokers, ","), "--group", pr.group,
			"--inputs", strings.Join(pr.tp.Inputs(), ","), "--output", pr.output, "--commit-interval", b.o.CommitInterval.String()}
	case kdedup:
		name = "kdedup"
		stateDir := base + ".state"
		if err := os.RemoveAll(stateDir); err != nil {
			return nil, fmt.Errorf("kdedup state directory: %w", err)
		}
		cfg := kdedupConfig(pr.tp, b.brokers, stateDir, pr.changelog, b.o.CommitInterval, b.o.DisableChangelog)
		path := base + ".yaml"
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			return nil, fmt.Errorf("kdedup configuration: %w", err)
		}
		args = []string{"run", "--config", path}
		env = b.o.KdedupEnv
	}
	logf, err := os.Create(base + ".log")
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	c := &child{name: name, tail: &tail{}, logf: logf, done: make(chan struct{})}
	bin := b.o.Binary
	if name == "kdedup" && b.o.KdedupBinary != "" {
		bin = b.o.KdedupBinary
	}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Env = childEnv(os.Environ(), env)
	c.cmd.Stdout = io.MultiWriter(logf, c.tail)
	c.cmd.Stderr = c.cmd.Stdout
	if err := c.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s (%s): %w", name, bin, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	return c, nil
}

// childEnv is this process's environment without KDEDUP_* variables
// (they would override the child's configuration), plus extra.
func childEnv(environ, extra []string) []string {
	var env []string
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "KDEDUP_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// stop sends SIGTERM and waits for the child to exit, which it must do
// with status 0 within stopTimeout; else it is killed.
func (c *child) stop() error {
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stopping %s: %w", c.name, err)
	}
	select {
	case <-c.done:
	case <-time.After(stopTimeout):
		c.kill()
		return fmt.Errorf("%s did not exit within %v of SIGTERM; killed\n%s log (last lines):\n%s", c.name, stopTimeout, c.name, c.tail)
	}
	if c.err != nil {
		return fmt.Errorf("after SIGTERM: %s", c.exitReport())
	}
	return nil
}

// kill ends the child at once, if it still runs, and waits for it.
func (c *child) kill() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Kill()
	<-c.done
}

// exitReport describes how an exited child ended, with its last log
// lines.
func (c *child) exitReport() string {
	status := "exited with status 0"
	if c.err != nil {
		status = c.err.Error()
	}
	return fmt.Sprintf("%s %s\n%s log (last lines):\n%s", c.name, status, c.name, c.tail)
}

// rusage returns the exited child's CPU time (user + system) and peak
// RSS in bytes, or zeros where the system does not report them.
func (c *child) rusage() (time.Duration, int64) {
	if c.cmd.ProcessState == nil {
		return 0, 0
	}
	return rusageOf(c.cmd.ProcessState)
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on
// every Linux architecture (sysconf(_SC_CLK_TCK)).
const clockTicks = 100

// procSnapshot reads a running process's CPU time (utime + stime of
// /proc/<pid>/stat) and peak RSS (VmHWM of /proc/<pid>/status, in
// bytes).
func procSnapshot(pid int) (cpu time.Duration, hwm int64, err error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	if cpu, err = parseStatCPU(stat); err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	if hwm, err = parseStatusHWM(status); err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return cpu, hwm, nil
}

// parseStatCPU returns utime + stime of a /proc/<pid>/stat line. The
// command name (field 2) is in parentheses and may hold spaces and
// parentheses itself: fields are counted from the last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no command name")
	}
	fields := strings.Fields(string(stat[i+1:]))
	// fields[0] is field 3 (state): utime is field 14, stime 15.
	if len(fields) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(fields))
	}
	var ticks int64
	for _, s := range fields[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpu time %q: %w", s, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// parseStatusHWM returns VmHWM of /proc/<pid>/status in bytes.
func parseStatusHWM(status []byte) (int64, error) {
	for _, line := range strings.Split(string(status), "\n") {
		v, ok := strings.CutPrefix(line, "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmHWM %q: want a number of kB", strings.TrimSpace(v))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmHWM %q: %w", f[0], err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("no VmHWM line")
}

// tail keeps the last lines written to it, for error messages.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

// tailBytes is how much of a child's output a tail keeps.
const tailBytes = 8 << 10

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*tailBytes {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailBytes:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.buf
	if len(s) > tailBytes {
		s = s[len(s)-tailBytes:]
		if i := bytes.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	return strings.TrimRight(string(s), "\n")
}

// kdedupInstance is kdedup's instance_id.
const kdedupInstance = "bench"

// kdedupConfig is the configuration kdedup runs with: the streams of
// kdedup's end-to-end tests (e2e.Topics.Config) with the bench's commit
// interval, log level warn, and `changelog: false` when disabled. Every
// string is quoted: YAML double-quoted strings are Go's.
func kdedupConfig(tp *e2e.Topics, brokers []string, stateDir, changelogTopic string, interval time.Duration, disableChangelog bool) string {
	q := strconv.Quote
	var bs []string
	for _, br := range brokers {
		bs = append(bs, q(br))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "brokers: [%s]\n", strings.Join(bs, ", "))
	fmt.Fprintf(&b, "group: %s\ninstance_id: %s\nstate_dir: %s\naudit_topic: %s\n", q(tp.Group), kdedupInstance, q(stateDir), q(tp.Audit))
	if changelogTopic != "" {
		fmt.Fprintf(&b, "changelog_topic: %s\n", q(changelogTopic))
	}
	if disableChangelog {
		b.WriteString("changelog: false\n")
	}
	fmt.Fprintf(&b, "commit_interval: %v\nlog_level: warn\n", interval)
	b.WriteString(tp.StreamsYAML())
	return b.String()
}
