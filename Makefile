# Dialtone: `make deps` once (or let the targets do it), then `make test`.
#
#   deps   install Debian packages and pinned Go tools (hack/install-deps.sh);
#          a stamp file in .bin/ makes it a no-op until that script changes
#   build  bin/dialtone, bin/dialtone-agent, and the agent for linux/arm
#          (GOARMv7) and linux/arm64 in bin/linux-arm/ and bin/linux-arm64/
#   test   go test -race over the whole tree (e2e in ./hack/e2e included),
#          except ./hack/interop
#   e2e    only ./hack/e2e, verbose
#   interop ./hack/interop, verbose: other TUF clients (tuf-js) read the
#          repository, and cosign signs and verifies bundle signatures with us
#   demo   hack/demo.sh against freshly built binaries
#   fuzz   every Fuzz target in the tree for FUZZTIME (default 10s) each
#   bench  hack/bench.sh if present, else every benchmark once
#   lint   gofmt, go vet, staticcheck
#   clean  remove build outputs (distclean: also the tools in .bin/)

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

# Never let the go command fetch a toolchain: a dependency that needs a newer
# Go must fail loudly.
export GOTOOLCHAIN := local

GO        ?= go
# A fresh machine may have Go at /usr/local/go without it being on PATH.
ifeq ($(shell command -v $(GO) 2>/dev/null),)
export PATH := /usr/local/go/bin:$(PATH)
endif
TOOLBIN   := $(CURDIR)/.bin
DEPSSTAMP := $(TOOLBIN)/.deps-stamp
STATICCHECK := $(TOOLBIN)/staticcheck

FUZZTIME    ?= 10s
TESTTIMEOUT ?= 20m
TESTFLAGS   ?=

SERVER_PKG := ./server/cmd/dialtone
AGENT_PKG  := ./agent/cmd/dialtone-agent

LDFLAGS := -s -w
# The agents are static, cgo-free binaries (the phone has no toolchain's libc
# to match). bin/dialtone links libc: PKCS#11 modules are C libraries.
GOBUILD := CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)"

# gofmt from the toolchain in use, not whatever is first in PATH.
GOFMT = $(shell $(GO) env GOROOT)/bin/gofmt

.PHONY: all deps build test e2e interop demo fuzz bench lint clean distclean

all: lint test build

deps: $(DEPSSTAMP)

$(DEPSSTAMP): hack/install-deps.sh hack/interop/tufjs/package.json hack/interop/tufjs/package-lock.json
	bash hack/install-deps.sh
	@mkdir -p $(@D)
	@touch $@

build:
	CGO_ENABLED=1 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/dialtone $(SERVER_PKG)
	$(GOBUILD) -o bin/dialtone-agent $(AGENT_PKG)
	GOOS=linux GOARCH=arm GOARM=7 $(GOBUILD) -o bin/linux-arm/dialtone-agent $(AGENT_PKG)
	GOOS=linux GOARCH=arm64 $(GOBUILD) -o bin/linux-arm64/dialtone-agent $(AGENT_PKG)

# hack/interop runs in `make interop` only: it drives external tools
# (node, cosign) as processes, so -race over it would only cost time.
test: deps
	$(GO) test -race -count=1 -timeout $(TESTTIMEOUT) $(TESTFLAGS) $$($(GO) list ./... | grep -v '/hack/interop$$')

e2e: deps
	$(GO) test -race -count=1 -timeout $(TESTTIMEOUT) -v $(TESTFLAGS) ./hack/e2e

interop: deps
	$(GO) test -count=1 -timeout $(TESTTIMEOUT) -v $(TESTFLAGS) ./hack/interop/...

demo: deps build
	bash hack/demo.sh

# Finds `func FuzzXxx(` in *_test.go files and runs each target on its own
# (go test -fuzz accepts one target per run), package by package.
#
# Go 1.26's fuzz coordinator can end a run with "context deadline exceeded"
# at the -fuzztime boundary when a starved worker has not stopped yet
# (golang/go#75804, fixed in Go 1.27). A failure counts only if it wrote a
# reproducer to testdata/fuzz/NAME or says something else; that race is
# reported and the run goes on.
fuzz:
	@files=$$(grep -rlE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(' . \
		| grep -vE '^\./(\.git|\.bin|bin)/' | sort || true); \
	if [[ -z "$$files" ]]; then echo "fuzz: no fuzz targets found"; exit 0; fi; \
	log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	for dir in $$(for f in $$files; do dirname "$$f"; done | sort -u); do \
		for name in $$(grep -hoE '^func Fuzz[A-Za-z0-9_]*\(' "$$dir"/*_test.go | sed -E 's/^func (Fuzz[A-Za-z0-9_]*)\(/\1/' | sort -u); do \
			echo "== $$dir $$name ($(FUZZTIME))"; \
			before=$$(ls "$$dir/testdata/fuzz/$$name" 2>/dev/null | wc -l || true); \
			if ! $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) "$$dir" 2>&1 | tee "$$log"; then \
				after=$$(ls "$$dir/testdata/fuzz/$$name" 2>/dev/null | wc -l || true); \
				if [[ "$$after" == "$$before" ]] && grep -q '^    context deadline exceeded$$' "$$log" \
					&& [[ $$(grep -c -- '--- FAIL' "$$log" || true) == 1 ]]; then \
					echo "fuzz: $$name: Go's fuzztime race (golang/go#75804), no reproducer: not a finding"; \
				else \
					exit 1; \
				fi; \
			fi; \
		done; \
	done

bench:
	@if [[ -f hack/bench.sh ]]; then \
		bash hack/bench.sh; \
	else \
		$(GO) test -run '^$$' -bench . -benchtime 1x ./...; \
	fi

lint: deps
	@echo "gofmt -l (all .go files but testdata)"; \
	out=$$(find . \( -path ./.git -o -path ./.bin -o -path ./bin -o -name testdata \) -prune \
		-o -name '*.go' -type f -print0 | xargs -0 -r $(GOFMT) -l); \
	if [[ -n "$$out" ]]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

clean:
	rm -rf bin/ coverage.out coverage.html *.coverprofile

# clean, and also the pinned tools and the deps stamp.
distclean: clean
	rm -rf .bin/
