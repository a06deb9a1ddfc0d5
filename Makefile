# kdedup — see README.md. Every target does its own set-up: Go fetches the
# modules it needs on first use.

GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME    ?= 30s
BENCHTIME   ?= 1s
BIN         ?= bin/kdedup

KAFKA_PORT  ?= 19092
# The three-node cluster: node N's client port is KAFKA_CLUSTER_PORT+N-1.
KAFKA_CLUSTER_PORT ?= 19192
KAFKA_CLUSTER_BROKERS = 127.0.0.1:$(KAFKA_CLUSTER_PORT),127.0.0.1:$(shell echo $$(($(KAFKA_CLUSTER_PORT)+1))),127.0.0.1:$(shell echo $$(($(KAFKA_CLUSTER_PORT)+2)))
# The tests that run on the three-node cluster in make test-kafka.
KAFKA_CLUSTER_TESTS ?= ^(TestScaleOut|TestCrashRecovery|TestBrokerBounce)$$

.PHONY: all build demo test test-helm lint fmt-check vet staticcheck bench bench-e2e plots fuzz clean kafka-up kafka-down test-kafka kafka-up3 kafka-down3 test-kafka-single test-kafka3 test-prometheus soak soak-kafka flood

all: build

build:
	$(GO) build -o $(BIN) ./cmd/kdedup

# The main job on a fresh machine: kdedup on its embedded broker, driven
# by generated push and order events, ending with a summary table.
# DEMO_FLAGS=--events=1000000 for a longer run (kdedup demo -h).
demo: build
	./$(BIN) demo $(DEMO_FLAGS)

# The whole suite: formatting, vet and every test, then the packages
# whose code runs concurrently (the consumer's callbacks, the admin
# server, the embedded broker and the processor through cmd/kdedup, topic
# creation, the state store) again under the race detector. Not e2e: it
# runs the binary, far too slow under -race; state with -short and fewer
# random events, whose full run takes over ten minutes under -race. The
# race detector needs cgo and a C compiler. This is what CI runs.
test: fmt-check vet
	$(GO) test -count=1 ./...
	@if [ "$$($(GO) env CGO_ENABLED)" != 1 ] || ! command -v "$$($(GO) env CC)" >/dev/null; then \
		echo "make test: go test -race needs cgo and a C compiler (CGO_ENABLED=$$($(GO) env CGO_ENABLED), CC=$$($(GO) env CC)): install gcc, or set CC and CGO_ENABLED=1"; exit 1; fi
	$(GO) test -race -count=1 ./admin ./cmd/kdedup ./consumer ./embedded ./producer
	$(GO) test -race -count=1 -short ./state -events=10000
	$(MAKE) --no-print-directory test-helm

# The Helm chart deploy/helm/kdedup: helm lint and helm template with the
# default values, with each values file of its ci/ folder and with each
# deploy/helm/testdata/*.bad.yaml (which must fail with the message its
# first line names); every rendered document decoded strictly into its
# Kubernetes API type and the release checked (deploy/helm/doc.go). The
# tests are a module of their own, so that k8s.io/api stays out of
# kdedup's dependencies: go test ./... does not reach them, this does.
# Helm (helmVersion in deploy/helm/helm_test.go) is built by go install
# into .cache/helm-<version> on first use (about 80 s), then reused;
# HELM=/path/to/helm uses another.
HELM ?=
test-helm:
	cd deploy/helm && KDEDUP_HELM_CACHE=$(CURDIR)/.cache KDEDUP_HELM=$(HELM) $(GO) test -count=1 ./...

# A real Apache Kafka broker (KRaft, one node) on 127.0.0.1:$(KAFKA_PORT),
# fetched from Maven Central into .cache/kafka on first use. Needs java
# and mvn.
kafka-up:
	KAFKA_PORT=$(KAFKA_PORT) scripts/kafka.sh up

kafka-down:
	KAFKA_PORT=$(KAFKA_PORT) scripts/kafka.sh down

# Three nodes, each broker and controller, replication factor 3 and
# min.insync.replicas 2, on 127.0.0.1: client ports KAFKA_CLUSTER_PORT to
# +2 (19192-19194), controllers 100 above (19292-19294).
kafka-up3:
	KAFKA_CLUSTER_PORT=$(KAFKA_CLUSTER_PORT) scripts/kafka.sh up3

kafka-down3:
	KAFKA_CLUSTER_PORT=$(KAFKA_CLUSTER_PORT) scripts/kafka.sh down3

# The end-to-end suites (the same tests make test runs on the in-process
# broker) against real brokers, started fresh and stopped afterwards
# whatever the outcome: all of them on one broker, then the crash,
# scale-out and broker-bounce tests on three. Tests that inject faults
# into the in-process broker skip themselves. Fails if either part does;
# the second runs even when the first failed.
test-kafka:
	@status=0; \
	$(MAKE) --no-print-directory test-kafka-single || status=1; \
	$(MAKE) --no-print-directory test-kafka3 || status=1; \
	exit $$status

test-kafka-single:
	@KAFKA_PORT=$(KAFKA_PORT) scripts/kafka.sh down >/dev/null
	@trap 'KAFKA_PORT=$(KAFKA_PORT) scripts/kafka.sh down' EXIT; trap 'exit 130' INT TERM; \
	KAFKA_PORT=$(KAFKA_PORT) scripts/kafka.sh up && \
	KDEDUP_TEST_BROKERS=127.0.0.1:$(KAFKA_PORT) \
	KDEDUP_TEST_SECURE_BROKERS=127.0.0.1:$$(($(KAFKA_PORT)+2)) KDEDUP_TEST_CA=$(CURDIR)/.cache/kafka/certs/ca.pem \
	$(GO) test -count=1 -timeout 30m -v ./e2e

test-kafka3:
	@KAFKA_CLUSTER_PORT=$(KAFKA_CLUSTER_PORT) scripts/kafka.sh down3 >/dev/null
	@trap 'KAFKA_CLUSTER_PORT=$(KAFKA_CLUSTER_PORT) scripts/kafka.sh down3' EXIT; trap 'exit 130' INT TERM; \
	start=$$(date +%s); \
	KAFKA_CLUSTER_PORT=$(KAFKA_CLUSTER_PORT) scripts/kafka.sh up3 && \
	KAFKA_CLUSTER_PORT=$(KAFKA_CLUSTER_PORT) KDEDUP_TEST_BROKERS=$(KAFKA_CLUSTER_BROKERS) \
	KDEDUP_TEST_BOUNCE=$(CURDIR)/scripts/kafka.sh \
	$(GO) test -count=1 -timeout 20m -v -run '$(KAFKA_CLUSTER_TESTS)' ./e2e; \
	status=$$?; echo "== three-node part: $$(($$(date +%s)-start))s"; exit $$status

# The long mixed-fault soak (docs/soak.md): TestSoak for SOAK_DURATION on
# an in-process cluster of three brokers, faults at random (a seed
# printed; KDEDUP_SOAK_SEED=N reruns its fault sequence), ending exact.
# make test runs the same test for 45s. soak-kafka runs it on a fresh
# three-node Apache Kafka cluster with broker SIGKILLs among the faults,
# stopped afterwards whatever the outcome (needs java and mvn).
SOAK_DURATION       ?= 1000s
SOAK_KAFKA_DURATION ?= 300s
soak:
	KDEDUP_SOAK_DURATION=$(SOAK_DURATION) $(GO) test -count=1 -timeout 90m -v -run '^TestSoak$$' ./e2e

soak-kafka:
	@KAFKA_CLUSTER_PORT=$(KAFKA_CLUSTER_PORT) scripts/kafka.sh down3 >/dev/null
	@trap 'KAFKA_CLUSTER_PORT=$(KAFKA_CLUSTER_PORT) scripts/kafka.sh down3' EXIT; trap 'exit 130' INT TERM; \
	KAFKA_CLUSTER_PORT=$(KAFKA_CLUSTER_PORT) scripts/kafka.sh up3 && \
	KAFKA_CLUSTER_PORT=$(KAFKA_CLUSTER_PORT) KDEDUP_TEST_BROKERS=$(KAFKA_CLUSTER_BROKERS) \
	KDEDUP_TEST_BOUNCE=$(CURDIR)/scripts/kafka.sh KDEDUP_SOAK_DURATION=$(SOAK_KAFKA_DURATION) \
	$(GO) test -count=1 -timeout 60m -v -run '^TestSoak$$' ./e2e

# The dashboard and alert rules against the real tools (Debian's
# prometheus package: prometheus and promtool on the PATH): promtool checks
# deploy/prometheus/alerts.yml and runs its unit tests, then a Prometheus
# scrapes two kdedup binaries every second until every query of
# deploy/grafana/kdedup.json has data and KdedupNotReady fires for the one
# that cannot become ready (deploy/prometheus_test.go; about 20s).
test-prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || \
		{ echo "make test-prometheus: prometheus and promtool are needed (apt-get install -y prometheus)"; exit 1; }
	KDEDUP_TEST_PROMETHEUS=1 $(GO) test -count=1 -v -run '^(TestAlertRules|TestPrometheusScrapesKdedup)$$' ./deploy

fmt-check:
	@out=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	cd deploy/helm && $(GO) vet ./...

staticcheck:
	$(GO) run $(STATICCHECK) ./...
	cd deploy/helm && $(GO) run $(STATICCHECK) ./...

lint: fmt-check vet staticcheck

bench:
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=$(BENCHTIME) ./...

# kdedup bench (README, Benchmarking) on the embedded broker, then on
# Apache Kafka: one broker on 127.0.0.1:$(KAFKA_PORT), started fresh and
# stopped afterwards whatever the outcome (needs java and mvn, as
# test-kafka). BENCH_FLAGS go to both runs, e.g.
# BENCH_FLAGS="--events 200000 --rounds 1". Fails if either run does; the
# second runs even when the first failed.
bench-e2e: build
	@status=0; \
	echo "== kdedup bench on the embedded broker"; \
	./$(BIN) bench $(BENCH_FLAGS) || status=1; \
	KAFKA_PORT=$(KAFKA_PORT) scripts/kafka.sh down >/dev/null; \
	echo "== kdedup bench on Apache Kafka (127.0.0.1:$(KAFKA_PORT))"; \
	( trap 'KAFKA_PORT=$(KAFKA_PORT) scripts/kafka.sh down' EXIT; trap 'exit 130' INT TERM; \
	  KAFKA_PORT=$(KAFKA_PORT) scripts/kafka.sh up && \
	  ./$(BIN) bench --brokers 127.0.0.1:$(KAFKA_PORT) $(BENCH_FLAGS) ) || status=1; \
	exit $$status

# The figures of BENCHMARKS.md, benchmarks/<plot>.svg, from the
# measurements appended to benchmarks/measurements.jsonl (bench/plot
# says what a line holds).
plots:
	$(GO) run ./cmd/kdedup-plot -in benchmarks/measurements.jsonl -out benchmarks

# Runs every fuzz target for FUZZTIME each (go test -fuzz takes one target
# at a time).
# 10 million distinct keys within one ttl, as fast as they can be sent,
# into a kdedup with state.memory 512MiB: its peak RSS must stay within
# it (make test runs the same test with 300,000 keys).
FLOOD_KEYS ?= 10000000
FLOOD_MEMORY ?= 512MiB
flood:
	KDEDUP_FLOOD_KEYS=$(FLOOD_KEYS) KDEDUP_FLOOD_MEMORY=$(FLOOD_MEMORY) $(GO) test -count=1 -v -timeout 40m -run '^TestMemoryFlood$$' ./e2e

fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$t"; \
			$(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) $$pkg; \
		done; \
	done

clean:
	rm -rf bin
