# smtpd - make targets
#
#   make test    gofmt check, go vet, all tests with the race detector (what CI runs)
#   make bench   all benchmarks, with allocations
#   make fuzz    every fuzz target of every package, FUZZTIME each (default 20s), in turn
#   make load    load test: Postfix's smtp-source against examples/sink (built into a temp
#                dir, run as `sink -hosts LOAD_HOST -ports LOAD_PORT LOAD_FLAGS`), next to
#                Postfix's smtp-sink and a go-smtp server, by ../shared/bench/compare.sh.
#                Needs Postfix's tools: apt-get install postfix ("No configuration"; the
#                daemon is not used). compare.sh's knobs pass through: ROUNDS=1 SHAPES=b ...

GO       ?= go
FUZZTIME ?= 20s
# The load harness lives beside the repository.
BENCH_DIR  ?= $(CURDIR)/../shared/bench
LOAD_HOST  ?= 127.0.0.1
LOAD_PORT  ?= 12540
LOAD_FLAGS ?= -quiet

.PHONY: test fmt-check vet bench fuzz load

test: fmt-check vet
	$(GO) test -race -count=1 ./...

fmt-check:
	@echo 'gofmt -l .'; \
	files=$$(gofmt -l .); \
	if [ -n "$$files" ]; then \
		echo 'these files need gofmt -w:'; echo "$$files"; exit 1; \
	fi

vet:
	$(GO) vet ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

fuzz:
	@set -e; n=0; \
	for pkg in $$($(GO) list ./...); do \
		list=$$($(GO) test -list '^Fuzz' "$$pkg") || { echo "$$list"; exit 1; }; \
		for target in $$(echo "$$list" | grep '^Fuzz' || true); do \
			n=$$((n + 1)); \
			echo "== $$pkg $$target for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s "$$pkg"; \
		done; \
	done; \
	echo "== $$n fuzz targets run for $(FUZZTIME) each"

load:
	@command -v smtp-source >/dev/null || { echo 'make load needs smtp-source: apt-get install postfix (choose "No configuration")'; exit 1; }
	@test -x "$(BENCH_DIR)/compare.sh" || { echo 'make load needs $(BENCH_DIR)/compare.sh'; exit 1; }
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(GO) build -o "$$tmp/sink" ./examples/sink; \
	export PROJECT_ADDR=$(LOAD_HOST):$(LOAD_PORT); \
	export PROJECT_CMD="$$tmp/sink -hosts $(LOAD_HOST) -ports $(LOAD_PORT) $(LOAD_FLAGS)"; \
	echo "PROJECT_CMD=$$PROJECT_CMD $(BENCH_DIR)/compare.sh"; \
	"$(BENCH_DIR)/compare.sh"
