# kdedup — see README.md. Every target does its own set-up: Go fetches the
# modules it needs on first use.

GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME    ?= 30s
BENCHTIME   ?= 1s
BIN         ?= bin/kdedup

KAFKA_PORT  ?= 19092

.PHONY: all build demo test lint fmt-check vet staticcheck bench fuzz clean kafka-up kafka-down test-kafka

all: build

build:
	$(GO) build -o $(BIN) ./cmd/kdedup

# The main job on a fresh machine: kdedup on its embedded broker, driven
# by generated push and order events, ending with a summary table.
# DEMO_FLAGS=--events=1000000 for a longer run (kdedup demo -h).
demo: build
	./$(BIN) demo $(DEMO_FLAGS)

# The whole suite: formatting, vet and every test. This is what CI runs.
test: fmt-check vet
	$(GO) test -count=1 ./...

# A real Apache Kafka broker (KRaft, one node) on 127.0.0.1:$(KAFKA_PORT),
# fetched from Maven Central into .cache/kafka on first use. Needs java
# and mvn.
kafka-up:
	KAFKA_PORT=$(KAFKA_PORT) scripts/kafka.sh up

kafka-down:
	KAFKA_PORT=$(KAFKA_PORT) scripts/kafka.sh down

# The end-to-end suites (the same tests make test runs on the in-process
# broker) against a real broker, started fresh and stopped afterwards.
# Tests that inject faults into the in-process broker skip themselves.
test-kafka:
	@KAFKA_PORT=$(KAFKA_PORT) scripts/kafka.sh down >/dev/null
	KAFKA_PORT=$(KAFKA_PORT) scripts/kafka.sh up
	KDEDUP_TEST_BROKERS=127.0.0.1:$(KAFKA_PORT) \
	KDEDUP_TEST_SECURE_BROKERS=127.0.0.1:$$(($(KAFKA_PORT)+2)) KDEDUP_TEST_CA=$(CURDIR)/.cache/kafka/certs/ca.pem \
	$(GO) test -count=1 -timeout 30m -v ./e2e; \
	status=$$?; KAFKA_PORT=$(KAFKA_PORT) scripts/kafka.sh down; exit $$status

fmt-check:
	@out=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) run $(STATICCHECK) ./...

lint: fmt-check vet staticcheck

bench:
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=$(BENCHTIME) ./...

# Runs every fuzz target for FUZZTIME each (go test -fuzz takes one target
# at a time).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$t"; \
			$(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) $$pkg; \
		done; \
	done

clean:
	rm -rf bin
