package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Options shape a benchmark run. The zero value of every field is its
// default; EnsureDefaults fills them in and Validate reports every
// problem at once.
type Options struct {
	// Brokers are the seed brokers (host:port) of the cluster to measure
	// on, reached in plaintext without SASL; the bench creates and deletes
	// topics and groups named kdedup-bench-<run>.* there. Default: empty,
	// which starts kdedup's embedded broker (kfake) in this process on a
	// free port, with its data in Dir.
	Brokers []string

	// Events is the number of events of the throughput phase, per pipe and
	// round; one event is one input record. Default: 1,000,000.
	Events int

	// Rounds is how many times each pipe runs; the report has each
	// round and the medians over rounds. Default: 3.
	Rounds int

	// Partitions is the partition count of every topic the bench creates
	// (each of the two inputs, the outputs, audit and changelog).
	// Default: 3.
	Partitions int

	// CommitInterval is how long one transaction collects records, for
	// both pipes (kdedup's commit_interval). Default: 100ms.
	CommitInterval time.Duration

	// Seed seeds the workload generator: the same seed, the same
	// records. Default: 0, a seed like any other.
	Seed uint64

	// LatencyDuration is how long the latency phase of each pipe
	// produces events (at half the rate the pipe reached). Default: 5s.
	LatencyDuration time.Duration

	// Keys, when above 0, measures kdedup with a window of Keys live keys
	// in its state: before kdedup's timed phase of each round, Keys events
	// with as many distinct idempotency keys (half push, half order
	// events, spread over the partitions) are produced, untimed, and
	// decided by a kdedup child of their own (the pre-load: its rate and
	// peak RSS are reported), which then stops gracefully; the timed
	// phase's kdedup starts on that state (its time from start to the
	// first result visible is reported as restart to deciding). Every
	// stream then runs with a ttl longer than the run's event-time span
	// (see the package documentation), so that no key expires during the
	// run. The raw pipe gets no pre-load. Default: 0, no pre-load; the
	// streams keep the ttls of kdedup's end-to-end tests.
	Keys int

	// Restore, with Keys, also measures a takeover after the pre-load:
	// kdedup stops, its state_dir is deleted, and a fresh kdedup on the
	// same group restores the state from the changelog (with
	// DisableChangelog: by replaying the input) before deciding a probe
	// event on every input partition; then a restart on the state kept,
	// measured the same way. Reported per round: the time from each
	// child's start until every probe's result is visible, the keys
	// restored and the restore's keys/s (from kdedup's "state restored"
	// log lines), and each child's peak RSS. Default: false. Restore
	// without Keys is an error.
	Restore bool

	// DisableChangelog runs kdedup with `changelog: false` in its
	// configuration: no changelog records in its transactions. Default:
	// false, kdedup writes its changelog as it does by default. The
	// configuration line is written only when true, so the default
	// works with builds that do not know the field.
	DisableChangelog bool

	// Binary is the path of the kdedup executable whose `run` and
	// `bench-pipe` commands the bench starts as child processes.
	// Default: os.Executable(), right when the bench runs inside kdedup
	// (`kdedup bench`); any other program (a test) must set it.
	Binary string

	// KdedupBinary, if set, is the kdedup executable whose `run` the bench
	// starts for the kdedup pipe, while Binary still runs the raw pipe:
	// to compare two builds of kdedup (an older one need not know
	// `bench-pipe`) against the same baseline. Default: Binary.
	KdedupBinary string

	// KdedupEnv are environment variables (NAME=value) added to the
	// kdedup child's environment, such as KDEDUP_CPUPROFILE=FILE; with
	// several rounds, each round's kdedup overwrites a file named so.
	// Default: none. The children never inherit KDEDUP_* variables of
	// this process: those would override their configuration.
	KdedupEnv []string

	// Dir is the scratch directory: the children's configurations,
	// state directories and logs, and the embedded broker's data. It is
	// created if missing and kept afterwards. Default: a fresh temporary
	// directory, removed when Run returns.
	Dir string

	// Out receives progress lines while the bench runs (one or two per
	// pipe and round, and a progress bar, or lines every 5 seconds, while
	// the pre-load is produced and decided). Default: io.Discard.
	Out io.Writer

	// Log receives the bench's own diagnostics and the embedded broker's
	// errors. Default: the zero zerolog.Logger, which discards everything.
	Log zerolog.Logger
}

// Defaults of Options.
const (
	DefaultEvents          = 1_000_000
	DefaultRounds          = 3
	DefaultPartitions      = 3
	DefaultCommitInterval  = 100 * time.Millisecond
	DefaultLatencyDuration = 5 * time.Second
)

// EnsureDefaults sets every zero field that has a default to it.
func (o *Options) EnsureDefaults() {
	if o.Events == 0 {
		o.Events = DefaultEvents
	}
	if o.Rounds == 0 {
		o.Rounds = DefaultRounds
	}
	if o.Partitions == 0 {
		o.Partitions = DefaultPartitions
	}
	if o.CommitInterval == 0 {
		o.CommitInterval = DefaultCommitInterval
	}
	if o.LatencyDuration == 0 {
		o.LatencyDuration = DefaultLatencyDuration
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
}

// Validate reports every problem of o (after EnsureDefaults: a zero that
// has a default is not one), joined with errors.Join.
func (o *Options) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("bench: "+format, args...)) }
	if o.Events < 1 {
		bad("events %d: want at least 1", o.Events)
	}
	if o.Rounds < 1 {
		bad("rounds %d: want at least 1", o.Rounds)
	}
	if o.Partitions < 1 {
		bad("partitions %d: want at least 1", o.Partitions)
	}
	if o.CommitInterval <= 0 {
		bad("commit interval %v: want a positive duration", o.CommitInterval)
	}
	if o.LatencyDuration <= 0 {
		bad("latency duration %v: want a positive duration", o.LatencyDuration)
	}
	if o.Keys < 0 {
		bad("keys %d: want 0 (no pre-load) or more", o.Keys)
	}
	if o.Restore && o.Keys <= 0 {
		bad("restore needs keys to restore: set keys above 0")
	}
	for _, b := range o.Brokers {
		if host, port, err := net.SplitHostPort(b); err != nil || host == "" || port == "" {
			bad("broker %q: want host:port", b)
		}
	}
	for _, kv := range o.KdedupEnv {
		if name, _, ok := strings.Cut(kv, "="); !ok || name == "" {
			bad("kdedup environment %q: want NAME=value", kv)
		}
	}
	return errors.Join(errs...)
}
