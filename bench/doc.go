// Package bench measures kdedup against a raw transactional consume →
// produce pipe on the same broker, over the same generated workload:
// events per second, events per CPU-second, peak memory and end-to-end
// latency. It is what `kdedup bench` runs; operators size deployments
// with it.
//
// # What runs
//
// Run creates, for each pipe of each round, topics of their own under a
// prefix unique to the run (inputs, outputs, audit, changelog, with
// retention off: the workload's event times lie days in the past), produces
// the workload into the inputs with a non-transactional idempotent
// producer, then starts the pipe as a child process of the program named
// by Options.Binary:
//
//   - the raw pipe (RawPipe, as `kdedup bench-pipe`): a transactional
//     consume → produce loop with kdedup's client settings
//     (read_committed, input partition = output partition, up to 10,000
//     records a poll, one transaction per commit interval) that copies
//     every input record to one output topic and decides nothing;
//   - kdedup (`kdedup run`) with the configuration of kdedup's own
//     end-to-end tests: push events keyed by a header, a JSON field or a
//     fingerprint of three fields under a tenant header, order events
//     keyed by a UUID under a tenant field with compare fields; the
//     commit interval of Options, log_level warn.
//
// The two never run at the same time, and the raw pipe runs first in
// every round. Before the first round, Run initialises a transactional id
// and finds a group coordinator, untimed, so that a fresh Apache Kafka
// creates its transaction state and consumer offsets topics then rather
// than in the first pipe's time. Each pipe of each round gets the same workload: the
// generator of internal/e2e (push and order events with client retries,
// key reuse with another payload, re-formatted JSON, late and
// window-edge copies, bad, missing and malformed keys), regenerated from
// Options.Seed, byte for byte the same records in the same order; one
// event is one input record. Fresh topics per pipe keep the latency
// phase's records (below) out of the next pipe's input; each run's topics
// and consumer group are deleted when it ends.
//
// # What is measured
//
// Throughput phase: the time from the child's start (process start,
// joining a fresh consumer group and kdedup's start-up included) until
// the result of every input record (the raw pipe's copy; kdedup's output
// or audit record, exactly one per input) is visible to a read_committed
// reader in this process. events/s is the event count over that time.
//
// CPU: at the end of the throughput phase, the child's user and system
// time from /proc/<pid>/stat (clock ticks of 1/100 s, USER_HZ on Linux).
// events/CPU-s is the event count over it: the child's own CPU only,
// never the broker's nor this process's producers and readers (the
// embedded broker runs in this process).
//
// Peak RSS: the child's VmHWM from /proc/<pid>/status at the same moment,
// the end of the throughput phase.
//
// Latency phase: with the child still running, new events of the same
// generator, each stamped with the time it is handed to the producer (its
// record timestamp, which both pipes copy to their results) and marked
// with the header bench.phase: latency, at half the rate the child just
// reached, for Options.LatencyDuration. The reader takes, for each result
// of those, the time it saw it minus its timestamp: input append (plus up
// to a millisecond of the producer's lingering) → visible under
// read_committed. p50 and p99 are nearest-rank percentiles of that.
//
// Then the child gets SIGTERM and must exit 0.
//
// # Checks
//
// After the child exited, a sentinel record on every partition of its
// result topics, read back, shows that the reader has seen everything
// committed: the results of the throughput phase must number exactly its
// events and those of the latency phase exactly its events, for either
// pipe. Anything else fails the run with an error naming the counts,
// rather than printing the numbers of a wrong run.
//
// Without /proc (not Linux), CPU and peak RSS are the child's rusage at
// exit, its latency phase included; Figures.WholeLife says so and Print
// marks them.
//
// # State at scale
//
// With Options.Keys (N), kdedup's timed phase runs on a state of N live
// keys. Before it, in every round, N events with N distinct keys (push
// events keyed by header and order events keyed by a UUID, alternately,
// marked bench.phase: preload) are produced into kdedup's inputs,
// generated one at a time, and a kdedup child on an empty state decides
// them: the pre-load, whose events/s (from its start until every result
// is visible), CPU and peak RSS are reported. It stops with SIGTERM and
// writes its state. The timed phase's workload is then produced and its
// child started on the same state_dir; restart to deciding is the time
// from its start until the first result of the timed phase is visible.
// The raw pipe gets no pre-load.
//
// Event times: the pre-load's events lie a millisecond apart and end a
// minute before the timed phase's first; and every stream runs with one
// ttl (Report.TTL, whole hours) longer than the round's event-time span
// by a day, so that no pre-loaded key expires while the round runs (the
// streams' own ttls of 10 and 20 minutes would retire them, in one burst,
// within the timed phase's first few thousand events). The timed phase's own
// keys then stay live too: it runs on N keys and adds its own first-seen
// ones.
//
// With Options.Restore, two more kdedup children follow the pre-load, each
// measured by a probe event on every partition of every input (a new key,
// bench.phase: probe) produced right after its start: the takeover, on a
// deleted state_dir, which restores every partition from the changelog
// before it decides (from the input with the changelog off), and the
// restart, on the state the takeover left. To deciding is from the
// child's start until every probe's result is visible. Their "state
// restored" log lines (kdedup logs at info for them) give each
// partition's keys and restore time: restore keys/s is the keys over the
// partitions' times summed (they restore one after another). Peak RSS is each child's own, taken when its
// figures are.
//
// Report.PlotPoints turns the figures of every round into the JSON lines
// the plot tool (package bench/plot) reads.
package bench
