# kdedup — see README.md. Every target does its own set-up: Go fetches the
# modules it needs on first use.

GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME    ?= 30s
BENCHTIME   ?= 1s
BIN         ?= bin/kdedup

.PHONY: all build demo test lint fmt-check vet staticcheck bench fuzz clean

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

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
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
