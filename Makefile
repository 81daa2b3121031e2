# smtpd - make targets
#
#   make test    gofmt check, go vet, all tests with the race detector (what CI runs),
#                the library's module (needs only Go) and the nested modules of NESTED:
#                mailauth and milter (their tests start nsd, dkimpy, pyspf, OpenDMARC,
#                OpenDKIM, SpamAssassin, ClamAV, rspamd and Postfix on loopback),
#                internal/testenv (that harness), the examples with their own go.mod
#                (so the library's stays small), and interop (the tests that drive
#                programs we did not write, and the READMEs' commands); every module is
#                tested on its own, GOWORK=off, with its own go.mod, as a user builds
#                it (go.work is for go run in the examples); the bench tools' modules
#                (TOOLS) are vetted and built
#   make bench   all benchmarks, with allocations
#   make fuzz    every fuzz target of every package of the library's module and of
#                FUZZED (mailauth, milter, examples/mx), FUZZTIME each (default 20s), in turn
#   make load    load test by bench/load.sh: Postfix's smtp-source drives examples/sink
#                (-quiet SINK_FLAGS), Postfix's smtp-sink and a go-smtp sink (bench/peers/
#                gosmtp) on 127.0.0.1:12541-12543 in ROUNDS (3) rounds of SHAPES ("a b c"),
#                then memory per idle connection; prints msgs/s, ratio to smtp-sink, CPU
#                per message and peak RSS. Knobs pass through the environment, e.g.
#                make load ROUNDS=1 SHAPES=b SINK_FLAGS=-pipelining (bench/README.md).
#                Needs Postfix's tools: apt-get install postfix ("No configuration"; the
#                daemon is not used).
#   make load-big  one 1 GiB message streamed (-stream) and a 256 MiB one buffered,
#                with and without SIZE=: MB/s and the sink's peak RSS (bench/bigmsg.sh)
#   make load-hostile  examples/sink's peak memory under hostile input (1 MiB command
#                lines, a 1 MiB EHLO, six 30 MiB messages), by bench/hostile.sh

GO       ?= go
FUZZTIME ?= 20s
NESTED   ?= internal/testenv mailauth milter examples/mx examples/metrics examples/queue interop
# nested modules with fuzz targets of their own
FUZZED   ?= mailauth milter examples/mx
# modules with no tests of their own: vetted and built only (make load runs them)
TOOLS    ?= bench/tools bench/peers/gosmtp

.PHONY: test fmt-check vet bench fuzz load load-hostile load-big

test: fmt-check vet
	@set -e; for m in $(TOOLS); do \
		echo "== $$m (own module): vet, build"; \
		(cd $$m && GOWORK=off $(GO) vet ./... && GOWORK=off $(GO) build -o /dev/null ./...); \
	done
	GOWORK=off $(GO) test -race -count=1 ./...
	@set -e; for m in $(NESTED); do \
		echo "== $$m (own module)"; \
		(cd $$m && GOWORK=off $(GO) vet ./... && GOWORK=off $(GO) test -race -count=1 ./...); \
	done

fmt-check:
	@echo 'gofmt -l .'; \
	files=$$(gofmt -l .); \
	if [ -n "$$files" ]; then \
		echo 'these files need gofmt -w:'; echo "$$files"; exit 1; \
	fi

vet:
	GOWORK=off $(GO) vet ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

fuzz:
	@set -e; n=0; \
	for m in . $(FUZZED); do \
		for pkg in $$(cd $$m && GOWORK=off $(GO) list ./...); do \
			list=$$(cd $$m && GOWORK=off $(GO) test -list '^Fuzz' "$$pkg") || { echo "$$list"; exit 1; }; \
			for target in $$(echo "$$list" | grep '^Fuzz' || true); do \
				n=$$((n + 1)); \
				echo "== $$pkg $$target for $(FUZZTIME)"; \
				(cd $$m && GOWORK=off $(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s "$$pkg"); \
			done; \
		done; \
	done; \
	echo "== $$n fuzz targets run for $(FUZZTIME) each"

# ROUNDS, SHAPES, SINK_FLAGS (and the other knobs of bench/load.sh -h) reach the
# script through the environment: make exports variables set on its command line.
load:
	@PATH="$$PATH:/usr/sbin:/sbin"; \
	for t in smtp-source smtp-sink; do \
		command -v $$t >/dev/null || { echo "make load needs Postfix's $$t: apt-get install postfix (choose \"No configuration\"; the daemon is not used)"; exit 1; }; \
	done
	GO="$(GO)" bash bench/load.sh

load-hostile:
	GO="$(GO)" bash bench/hostile.sh

load-big:
	bash bench/bigmsg.sh
