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
	// restores collects kdedup's "state restored" lines.
	restores *restoreLog
}

// startChild starts pr's pipe: `bench-pipe` for the raw pipe, `run` with
// a configuration written to the scratch directory for kdedup, in the
// role given (the timed phase's child, or one of the state at scale's).
// Its output goes to a log file there; kdedup's lines saying a state was
// restored are collected in the child's restores.
func (b *bencher) startChild(pr *pipeRun, round int, role role) (*child, error) {
	base := filepath.Join(b.dir, fmt.Sprintf("round%d-%s", round, pr.kind))
	var args, env []string
	name := "raw pipe"
	rl := &restoreLog{}
	switch pr.kind {
	case raw:
		args = []string{"bench-pipe", "--brokers", strings.Join(b.brokers, ","), "--group", pr.group,
			"--inputs", strings.Join(pr.tp.Inputs(), ","), "--output", pr.output, "--commit-interval", b.o.CommitInterval.String()}
	case kdedup:
		name = "kdedup"
		// Every child of a round's kdedup runs on one state directory:
		// the pre-load's is the later ones'.
		stateDir := base + ".state"
		if role.freshState(b.o.Keys) {
			if err := os.RemoveAll(stateDir); err != nil {
				return nil, fmt.Errorf("kdedup state directory: %w", err)
			}
		}
		if role != timedRole {
			name += " (" + string(role) + ")"
			base += "-" + string(role)
		}
		cfg, err := kdedupConfig(pr.tp, kdedupSettings{
			brokers: b.brokers, stateDir: stateDir, changelogTopic: pr.changelog,
			commitInterval: b.o.CommitInterval, disableChangelog: b.o.DisableChangelog,
			ttl: pr.ttl, logLevel: role.logLevel(b.o.Keys),
		})
		if err != nil {
			return nil, err
		}
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
	c := &child{name: name, tail: &tail{}, logf: logf, done: make(chan struct{}), restores: rl}
	bin := b.o.Binary
	if pr.kind == kdedup && b.o.KdedupBinary != "" {
		bin = b.o.KdedupBinary
	}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Env = childEnv(os.Environ(), env)
	c.cmd.Stdout = io.MultiWriter(logf, c.tail, rl)
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

// role is what a kdedup child is started for: the timed phase (as
// without Options.Keys), or one of the state at scale's children.
type role string

const (
	timedRole    role = ""
	preloadRole  role = "pre-load"
	takeoverRole role = "takeover"
	restartRole  role = "restart"
)

// freshState reports whether the child starts on an empty state_dir: the
// first child of a round's kdedup (the pre-load's, or with no keys to
// pre-load the timed phase's) and the takeover do.
func (r role) freshState(keys int) bool {
	return r == preloadRole || r == takeoverRole || (r == timedRole && keys == 0)
}

// logLevel is the child's log_level: info where the bench reads kdedup's
// "state restored" lines (the children started on a group that decided
// before: with keys to pre-load, all but the pre-load's), warn elsewhere
// (the timed phase without Options.Keys, as before it existed).
func (r role) logLevel(keys int) string {
	if keys > 0 && r != preloadRole {
		return "info"
	}
	return "warn"
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

// activity is the number of lines the child wrote so far; 0 for no
// child.
func (c *child) activity() int64 {
	if c == nil {
		return 0
	}
	return c.restores.activity()
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

// kdedupSettings are what the bench sets in kdedup's configuration.
type kdedupSettings struct {
	brokers          []string
	stateDir         string
	changelogTopic   string // "" leaves kdedup's default
	commitInterval   time.Duration
	disableChangelog bool
	// ttl, if not 0, replaces every stream's ttl (see Options.Keys).
	ttl time.Duration
	// logLevel is kdedup's log_level; "" is warn.
	logLevel string
}

// kdedupConfig is the configuration kdedup runs with: the streams of
// kdedup's end-to-end tests (e2e.Topics.StreamsYAML) with the bench's
// commit interval, log level warn (or s.logLevel), every stream's ttl
// s.ttl if set, and `changelog: false` when disabled. Every string is
// quoted: YAML double-quoted strings are Go's.
func kdedupConfig(tp *e2e.Topics, s kdedupSettings) (string, error) {
	q := strconv.Quote
	var bs []string
	for _, br := range s.brokers {
		bs = append(bs, q(br))
	}
	level := s.logLevel
	if level == "" {
		level = "warn"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "brokers: [%s]\n", strings.Join(bs, ", "))
	fmt.Fprintf(&b, "group: %s\ninstance_id: %s\nstate_dir: %s\naudit_topic: %s\n", q(tp.Group), kdedupInstance, q(s.stateDir), q(tp.Audit))
	if s.changelogTopic != "" {
		fmt.Fprintf(&b, "changelog_topic: %s\n", q(s.changelogTopic))
	}
	if s.disableChangelog {
		b.WriteString("changelog: false\n")
	}
	fmt.Fprintf(&b, "commit_interval: %v\nlog_level: %s\n", s.commitInterval, level)
	streams := tp.StreamsYAML()
	if s.ttl != 0 {
		var err error
		if streams, err = withTTL(streams, s.ttl, 2); err != nil {
			return "", err
		}
	}
	b.WriteString(streams)
	return b.String(), nil
}

// streamTTLPrefix starts the ttl line of a stream in
// e2e.Topics.StreamsYAML.
const streamTTLPrefix = "    ttl: "

// withTTL returns the streams section yaml with every stream's ttl line
// set to ttl, and an error unless it holds exactly want of them (the
// e2e configuration changed shape).
func withTTL(yaml string, ttl time.Duration, want int) (string, error) {
	lines := strings.SplitAfter(yaml, "\n")
	n := 0
	for i, l := range lines {
		if strings.HasPrefix(l, streamTTLPrefix) {
			lines[i] = streamTTLPrefix + ttl.String() + "\n"
			n++
		}
	}
	if n != want {
		return "", fmt.Errorf("kdedup configuration: %d stream ttl lines in the streams section, want %d:\n%s", n, want, yaml)
	}
	return strings.Join(lines, ""), nil
}
