package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/admin"
	"github.com/kdedup/kdedup/config"
	"github.com/kdedup/kdedup/connect"
	"github.com/kdedup/kdedup/consumer"
	"github.com/kdedup/kdedup/dedup"
	"github.com/kdedup/kdedup/embedded"
	"github.com/kdedup/kdedup/producer"
	"github.com/kdedup/kdedup/state"
)

// shutdownLimit bounds a SIGTERM's clean stop (docs/operations.md promises an exit within 30s).
const shutdownLimit = 25 * time.Second

// embeddedPartitions is the partition count of the input topics the
// embedded broker creates.
const embeddedPartitions = 3

func runCmd(args, env []string, stderr io.Writer) int {
	cfg, ok := loadConfig("run", args, env, stderr)
	if !ok {
		return 2
	}
	log := newLogger(cfg.LogLevel, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	go func() {
		<-ctx.Done()
		stop() // a second signal ends the process at once
		// SIGTERM exits 0 within 30s at any moment (docs/operations.md,
		// "Stopping: SIGTERM and SIGKILL"). A clean stop takes a
		// fraction of that; should one hang (a broker that stopped
		// answering), exit anyway: the state is safe at any
		// instant by design (a kill loses nothing), and an open
		// transaction is aborted by the transaction timeout or by the
		// next start's fencing.
		time.Sleep(shutdownLimit) // a deadline on the whole shutdown, not a wait for a condition
		log.Warn().Dur("limit", shutdownLimit).Msg("shutdown did not finish in time; exiting")
		os.Exit(0)
	}()
	if err := serve(ctx, cfg, log, serveOptions{port: embedded.DefaultPort}); err != nil {
		log.Error().Err(err).Msg("kdedup stopped")
		return 1
	}
	log.Info().Msg("kdedup stopped")
	return 0
}

func newLogger(level string, w io.Writer) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

// serveOptions are what the demo changes about serve.
type serveOptions struct {
	// port of the embedded broker; 0 picks a free one.
	port int
	// started, if not nil, is called once the processor runs.
	started func(served)
}

// served is what serve hands to a caller that watches the processor (the
// demo).
type served struct {
	brokers []string
	metrics *admin.Metrics
	proc    *consumer.Processor
}

// writtenTopics lists every topic kdedup's transactions write: the audit
// and changelog topics, and each stream's output and repartition topic.
func writtenTopics(cfg *config.Config) []string {
	ts := []string{cfg.AuditTopic, cfg.ChangelogTopic}
	for _, s := range cfg.Streams {
		ts = append(ts, s.Output)
		if s.RepartitionTopic != "" {
			ts = append(ts, s.RepartitionTopic)
		}
	}
	return ts
}

// serve runs kdedup until ctx ends: the embedded broker when no brokers
// are configured, the state store, the topics, the admin endpoints and the
// processor.
func serve(ctx context.Context, cfg *config.Config, log zerolog.Logger, opts serveOptions) error {
	brokers := cfg.Brokers
	// Validate refuses SASL and TLS without brokers: the embedded broker
	// speaks plaintext.
	secure, err := connect.Options(cfg.SASL, cfg.TLS)
	if err != nil {
		return err
	}
	createInputs := int32(0)
	if len(brokers) == 0 {
		b, err := embedded.Start(filepath.Join(cfg.StateDir, "broker"), opts.port, embeddedPartitions, log)
		if err != nil {
			return err
		}
		defer b.Close()
		brokers = b.Addrs()
		createInputs = embeddedPartitions
		log.Info().Strs("brokers", brokers).Str("data", filepath.Join(cfg.StateDir, "broker")).
			Msgf("embedded Kafka broker started; produce with e.g.: kcat -b %s -t %s -P -H Idempotency-Key=k1 -H tenant-id=t1", brokers[0], cfg.Streams[0].Input)
	}

	var streams []consumer.Stream
	plan := producer.TopicPlan{Audit: cfg.AuditTopic, Changelog: cfg.ChangelogTopic, CreateInputs: createInputs}
	for i, s := range cfg.Streams {
		rules, err := dedup.Compile(s)
		if err != nil {
			return fmt.Errorf("streams[%d]: %w", i, err)
		}
		streams = append(streams, consumer.Stream{Rules: rules, Input: s.Input, Output: s.Output, Repartition: s.RepartitionTopic})
		plan.Streams = append(plan.Streams, producer.StreamTopics{Input: s.Input, Output: s.Output, Repartition: s.RepartitionTopic})
	}

	mem := memoryPlan(cfg.State, os.Getenv("GOMEMLIMIT") != "", pebbleOffHeap)
	if mem.goLimit > 0 {
		debug.SetMemoryLimit(mem.goLimit)
	}
	log.Info().Int64("memory", int64(cfg.State.Memory)).Int64("go_memory_limit", debug.SetMemoryLimit(-1)).
		Int64("index_memory", mem.index).Int("restore_buffer", mem.restoreBuffer).
		Int64("pending_changes", mem.pendingChanges).Int32("fetch_bytes", mem.fetchBytes).
		Bool("pebble_off_heap", pebbleOffHeap).Msg("memory budget")
	if int64(cfg.State.CacheSize)+2*int64(cfg.State.MemtableSize) > int64(cfg.State.Memory)/2 {
		log.Warn().Msg("state.cache_size and two memtables take more than half of state.memory: the key indexes and the Kafka clients may not fit in what is left")
	}
	// A damaged store, or another group's, is moved aside and replaced by
	// an empty one, restored from the changelog (docs/operations.md,
	// "Corrupt state").
	store, _, err := state.OpenOrRebuild(filepath.Join(cfg.StateDir, "state"), state.Options{
		CacheSize:      int64(cfg.State.CacheSize),
		MemtableSize:   uint64(cfg.State.MemtableSize),
		IndexMemory:    mem.index,
		PendingChanges: mem.pendingChanges,
		Logger:         log,
		Owner:          state.Owner{Group: cfg.Group, ChangelogTopic: cfg.ChangelogTopic},
	})
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error().Err(err).Msg("closing state")
		}
	}()

	admCl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.MetadataMinAge(250 * time.Millisecond)}, secure...)...)
	if err != nil {
		return fmt.Errorf("brokers %v: %w", brokers, err)
	}
	adm := kadm.NewClient(admCl)
	parts, err := producer.EnsureTopics(ctx, adm, plan, brokers, time.Minute, log)
	var limits map[string]producer.Limits
	if err == nil {
		limits, err = producer.TopicLimits(ctx, adm, time.Minute, writtenTopics(cfg)...)
		if !limits[cfg.ChangelogTopic].Compacted {
			log.Warn().Str("topic", cfg.ChangelogTopic).Msg("the changelog topic is not compacted (cleanup.policy=compact): it grows with every state change, and retention shorter than ttl + lateness would lose live keys on handover")
		}
		if limits[cfg.AuditTopic].Compacted {
			log.Warn().Str("topic", cfg.AuditTopic).Msg("the audit topic is compacted: it keeps only the last audit record of each key and refuses records without one")
		}
	}
	admCl.Close()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}

	if createInputs > 0 {
		written := map[string]int32{}
		for _, t := range writtenTopics(cfg) {
			written[t] = parts[t]
		}
		if err := embedded.EndCrashedTransactions(ctx, brokers, cfg.Group+"-"+cfg.InstanceID, written); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("embedded broker: %w", err)
		}
	}

	metrics := admin.NewMetrics()
	// The lag collector asks the brokers on scrapes with a client of its
	// own, outside the processor's (and outside kdedup_kgo_*, which count
	// the processing's traffic).
	lagCl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.MetadataMinAge(time.Second)}, secure...)...)
	if err != nil {
		return fmt.Errorf("brokers %v: %w", brokers, err)
	}
	defer lagCl.Close()
	metrics.Registry.MustRegister(
		admin.NewPebbleCollector(store.Metrics),
		admin.NewDiskCollector(cfg.StateDir),
		admin.NewLagCollector(kadm.NewClient(lagCl), cfg.Group, cfg.InstanceID, admin.LagOptions{}),
	)
	procOpts := consumer.Options{
		Brokers:        brokers,
		Group:          cfg.Group,
		InstanceID:     cfg.InstanceID,
		Guarantee:      cfg.Guarantee,
		CommitInterval: time.Duration(cfg.CommitInterval),
		AuditTopic:     cfg.AuditTopic,
		ChangelogTopic: cfg.ChangelogTopic,
		NoChangelog:    cfg.Changelog != nil && !*cfg.Changelog,
		Streams:        streams,
		Partitions:     parts,
		Store:          store,
		Log:            log,
		Observer:       metrics,
		Limits:         limits,
		ClientOpts:     append(slices.Clip(secure), kgo.WithHooks(metrics.KgoHooks())),
		RestoreBuffer:  mem.restoreBuffer,
		FetchMaxBytes:  mem.fetchBytes,
		MinFreeSpace:   minFreeSpace(cfg.State),
	}
	proc, err := consumer.New(procOpts)
	if err != nil {
		return err
	}
	live := &liveProcessor{}
	live.Store(proc)
	metrics.SetReady(live.Ready)
	if cfg.AdminAddr != "" {
		token, err := cfg.ReadAdminToken()
		if err != nil {
			return err
		}
		srv, err := admin.Listen(cfg.AdminAddr, metrics, live.Ready, log,
			admin.WithToken(token), admin.WithTLS(cfg.AdminTLS.CertFile, cfg.AdminTLS.KeyFile))
		if err != nil {
			return err
		}
		srv.HandleKeys(live, cfg.InstanceID)
		srv.HandleSnapshot(func() (any, error) {
			dir, err := filepath.Abs(filepath.Join(cfg.StateDir, "snapshots", time.Now().UTC().Format("20060102T150405.000000000Z")))
			if err != nil {
				return nil, err
			}
			m, err := store.Snapshot(dir, cfg.Group, cfg.ChangelogTopic)
			if err != nil {
				return nil, err
			}
			log.Info().Str("dir", dir).Int("partitions", len(m.Keyspaces)).Msg("snapshot taken")
			return snapshotAnswer{Dir: dir, Manifest: m}, nil
		})
		go srv.Serve(ctx)
		log.Info().Str("addr", srv.Addr()).Bool("token", token != "").Bool("tls", cfg.AdminTLS.On()).Msg("admin endpoints: /healthz /readyz /metrics /v1/keys /state/snapshot")
	}
	if opts.started != nil {
		opts.started(served{brokers: brokers, metrics: metrics, proc: proc})
	}
	log.Info().Str("group", cfg.Group).Str("instance_id", cfg.InstanceID).Str("guarantee", cfg.Guarantee).Msg("processing")
	for {
		err := proc.Run(ctx)
		if !errors.Is(err, state.ErrStoreCorrupt) {
			return err
		}
		// Damage met while running: the store is moved aside and
		// replaced by an empty one, and a new processor, from the
		// group's committed offsets, restores every partition from the
		// changelog.
		if _, err := store.Rebuild(err); err != nil {
			return err
		}
		if proc, err = consumer.New(procOpts); err != nil {
			return err
		}
		live.Store(proc)
		log.Info().Str("group", cfg.Group).Str("instance_id", cfg.InstanceID).Msg("processing again, on a rebuilt state")
	}
}

// liveProcessor is the processor running now, for what outlives one (the
// admin endpoints): a rebuild of corrupt state replaces it.
type liveProcessor struct {
	atomic.Pointer[consumer.Processor]
}

func (l *liveProcessor) Ready() bool { return l.Load().Ready() }

func (l *liveProcessor) LookupKey(ctx context.Context, q consumer.KeyQuery) (consumer.KeyState, error) {
	return l.Load().LookupKey(ctx, q)
}

func (l *liveProcessor) ForgetKey(ctx context.Context, q consumer.KeyQuery, m consumer.Match) (consumer.KeyState, error) {
	return l.Load().ForgetKey(ctx, q, m)
}

// memoryBudget is how kdedup run shares state.memory out.
type memoryBudget struct {
	goLimit        int64 // Go's memory limit to set; 0: leave it (GOMEMLIMIT is set)
	index          int64 // state.Options.IndexMemory
	restoreBuffer  int   // consumer.Options.RestoreBuffer
	pendingChanges int64 // state.Options.PendingChanges
	fetchBytes     int32 // consumer.Options.FetchMaxBytes
}

// changeBytes is what one committed change held in memory before its
// checkpoint costs (its map entry, its retirement heap item, its share of
// the map's growth), measured in heap profiles of TestMemoryFlood: 36 MB
// for about 145,000 changes.
const changeBytes = 250

// indexReserve is the heap memoryPlan keeps from the key indexes for the
// write-back, the fetched records and Pebble's write batches, which at
// state.memory 256MiB took about 80 MiB together at their peak in
// TestMemoryFlood.
const indexReserve = 96 << 20

// memoryPlan shares st.Memory out. Pebble's block cache and memtables
// (their own settings) come first; 90% of the rest is the heap kdedup
// itself may use (the garbage collector works harder as the heap nears
// Go's limit, rather than the process passing it; the other 10% are what
// the runtime holds besides the heap), at least 64 MiB. That heap is Go's
// memory limit where Pebble allocates outside Go's heap (offHeap: a cgo
// build); without cgo Pebble's cache and memtables are on Go's heap and
// the limit is raised by their size. GOMEMLIMIT in the environment
// (envLimit) wins over either. Of that heap:
//   - the key indexes of all partitions take at most 3/8 of st.Memory and
//     what the heap leaves after a 96 MiB reserve for the rest below (at
//     least a quarter of the heap): at 1 GiB the reserve does not bind,
//     at 256 MiB it leaves the indexes 48 MiB (an exact index grows by
//     doubling, and for a while takes half as much again);
//   - the committed changes held in memory before their checkpoint, an
//     eighth of the heap (state.Options.PendingChanges; about twice that
//     while checkpoints are written);
//   - a fetch of records, a 256th of the heap, at least 512 KiB and at
//     most franz-go's 50 MiB: a fetch's bytes are compressed, and small
//     compressible records took thirty times their bytes on the wire
//     once decompressed and decoded (TestMemoryFlood's heap profile: 80
//     MB for a 2.25 MiB fetch);
//   - a restore's two buffers, 1/16 of st.Memory each, at most 64 MiB
//     and at least 4 MiB (a restore runs while nothing is decided).
//
// The rest holds the open transactions' batches, the producers' buffers
// and Pebble's write batches. TestMemoryFlood checks the sum: 10 million
// new keys as fast as they come stay within state.memory.
func memoryPlan(st config.StateOptions, envLimit, offHeap bool) memoryBudget {
	m := int64(st.Memory)
	pebble := int64(st.CacheSize) + 2*int64(st.MemtableSize)
	heap := max((m-pebble)/10*9, 64<<20)
	b := memoryBudget{
		index:          min(m/8*3, max(heap-indexReserve, heap/4)),
		restoreBuffer:  int(min(max(m/16, 4<<20), 64<<20)),
		pendingChanges: heap / 8 / changeBytes,
		fetchBytes:     int32(min(max(heap/256, 512<<10), 50<<20)),
	}
	if !envLimit {
		b.goLimit = heap
		if !offHeap {
			b.goLimit += pebble
		}
	}
	return b
}

// minFreeSpace is state.min_free_space in bytes (0 when unset: a
// configuration that did not pass EnsureDefaults).
func minFreeSpace(st config.StateOptions) int64 {
	if st.MinFreeSpace == nil {
		return 0
	}
	return int64(*st.MinFreeSpace)
}
