# aigate: the user interface of the build. `make run` and `make test` work on
# a fresh Debian 12 machine: they install what they lack first.
SHELL := /bin/bash
JOBS  ?= $(shell nproc)
BUILD_PKGS := build-essential cmake pkg-config libuv1-dev libcurl4-openssl-dev libjansson-dev \
              liblmdb-dev libssl-dev zlib1g-dev
TEST_PKGS  := clang libclang-rt-14-dev curl wrk nginx-light prometheus chromium openssl redis-server \
              python3-botocore libfaketime libnss-wrapper
BENCH_PKGS := wrk nginx-light

.PHONY: all build release debug asan tsan run test unit bench fuzz fuzz-build soak docs deps-build deps-test \
        deps-bench deps-web deps-node format format-check clean install

all: build

# Installs the Debian packages named in $(1) that are missing. Not root or not
# Debian: prints the exact command and stops.
define ensure_pkgs
	@missing=""; for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	  else \
	    echo "missing packages:$$missing"; echo "run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi
endef

deps-build:
	$(call ensure_pkgs,$(BUILD_PKGS))

deps-test: deps-build
	$(call ensure_pkgs,$(TEST_PKGS))
	@command -v node >/dev/null || $(MAKE) --no-print-directory NODE_PKG=1 deps-node
	@cd tests && [ -d node_modules/@anthropic-ai/sdk ] && [ -d node_modules/puppeteer-core ] && \
	  [ -d node_modules/croner ] && [ -d node_modules/smtp-server ] && [ -d node_modules/openai ] && \
	  [ -d node_modules/s3rver ] || \
	  npm install --no-audit --no-fund --silent

# The dashboard's chart library (uPlot), pinned by web/package-lock.json: the build embeds it
# (cmake/modules/35-dashboard.cmake). npm ci again when the lock file is newer than the install.
deps-web:
	@command -v npm >/dev/null || $(MAKE) --no-print-directory deps-node
	@cd web && [ -d node_modules/uplot ] && [ node_modules/.package-lock.json -nt package-lock.json ] || \
	  npm ci --no-audit --no-fund --silent

deps-node:
	$(call ensure_pkgs,nodejs npm)

deps-bench: deps-build
	$(call ensure_pkgs,$(BENCH_PKGS))

build release: deps-build deps-web
	@cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build build/release -j$(JOBS)

debug: deps-build deps-web
	@cmake -S . -B build/debug -DCMAKE_BUILD_TYPE=Debug >/dev/null
	@cmake --build build/debug -j$(JOBS)

asan: deps-build deps-web
	@cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DAG_SANITIZE=ON >/dev/null
	@cmake --build build/asan -j$(JOBS)

tsan: deps-build deps-web
	@cmake -S . -B build/tsan -DCMAKE_BUILD_TYPE=Debug -DAG_TSAN=ON >/dev/null
	@cmake --build build/tsan -j$(JOBS)

# Quiet unless it fails: the build's output goes to a log, printed only then.
run: deps-build deps-web
	@mkdir -p build
	@if ! { cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo && \
	        cmake --build build/release -j$(JOBS); } >build/run-build.log 2>&1; then \
	  cat build/run-build.log; echo "make run: the build failed (the log above: build/run-build.log)"; exit 1; fi
	@echo "aigate built: $(CURDIR)/build/release/aigate (build log: build/run-build.log)"
	@./build/release/aigate dev

# Every test twice: a normal build, then the same suite under ASan+UBSan (less bench_smoke,
# which checks the benchmark harness, not the gateway: it ran in the debug stage).
test: deps-test debug asan tsan
	@echo "== tests: debug build"
	@cd build/debug && ctest --output-on-failure -j$(JOBS)
	@grep -h "^toml-test" build/debug/Testing/Temporary/LastTest.log || true
	@echo "== tests: ASan+UBSan build"
	@cd build/asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j$(JOBS) -E '^bench_smoke$$'
	@echo "== tests: ThreadSanitizer build (threaded units and the black-box suite)"
	@cd build/tsan && TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/tsan.supp" ctest --output-on-failure -j$(JOBS) \
	  -R 'test_limiter|test_usage_log|test_stats|test_kv|test_util|test_periodic|test_routes|test_outputs|test_redis|integration_'
	@echo "== fuzzing: every target $(FUZZ_SMOKE_SECONDS) s on top of its corpus, two at a time"
	@$(MAKE) --no-print-directory fuzz-build
	@fuzz/run.sh $(FUZZ_SMOKE_SECONDS) 2

unit: debug
	@cd build/debug && ctest --output-on-failure -L unit

# libFuzzer builds (clang) of the fuzz targets only; the output goes to a log.
# (No parenthesis in the pattern: an unbalanced one would end make's $(shell ...).)
FUZZ_TARGETS = $(shell grep -ho 'ag_fuzz_target.fuzz_[a-z0-9_]*' cmake/modules/*.cmake | sed 's/^ag_fuzz_target.//')
FUZZ_SMOKE_SECONDS ?= 20
fuzz-build: deps-test deps-web
	@mkdir -p build
	@if ! { CC=clang cmake -S . -B build/fuzz -DCMAKE_BUILD_TYPE=Debug -DAG_FUZZ=ON && \
	        cmake --build build/fuzz -j$(JOBS) --target $(FUZZ_TARGETS); } >build/fuzz-build.log 2>&1; then \
	  cat build/fuzz-build.log; echo "fuzz-build failed (build/fuzz-build.log)"; exit 1; fi

# Long runs: FUZZ_SECONDS each (default 600), JOBS at a time. New inputs go to
# build/fuzz/corpus/; a crash becomes a committed corpus entry (fuzz/run.sh).
fuzz: fuzz-build
	@fuzz/run.sh $${FUZZ_SECONDS:-600} $(JOBS)

bench: deps-bench release
	@bench/run.sh $(BENCH_ARGS)

# Mixed traffic against the release binary for SOAK_SECONDS (default 600);
# fails on RSS growth after warm-up, a missing usage entry or a leaked fd.
soak: deps-test release
	@node bench/soak.js

docs: debug
	@{ cat docs/config.head.md; ./build/debug/aigate config reference; cat docs/config.tail.md; } > docs/config.md

# The binary, the systemd unit (paths rewritten to PREFIX and SYSCONFDIR), a default config
# (kept if one is there) and the docs. INSTALL_BIN: the binary to install (default: the
# release build, built first when missing).
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
DESTDIR    ?=
INSTALL_BIN ?= build/release/aigate
install:
	@[ -x "$(INSTALL_BIN)" ] || $(MAKE) --no-print-directory release
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/systemd/system \
	  $(DESTDIR)$(SYSCONFDIR)/aigate $(DESTDIR)$(PREFIX)/share/doc/aigate
	install -m 0755 $(INSTALL_BIN) $(DESTDIR)$(PREFIX)/bin/aigate
	sed -e 's|/usr/local/bin/aigate|$(PREFIX)/bin/aigate|g' \
	    -e 's|/usr/local/share/doc/aigate|$(PREFIX)/share/doc/aigate|g' \
	    -e 's|/etc/aigate/|$(SYSCONFDIR)/aigate/|g' contrib/aigate.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/aigate.service
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/aigate.service
	@[ -e $(DESTDIR)$(SYSCONFDIR)/aigate/aigate.toml ] && echo "kept $(DESTDIR)$(SYSCONFDIR)/aigate/aigate.toml" || \
	  install -m 0644 contrib/aigate.toml $(DESTDIR)$(SYSCONFDIR)/aigate/aigate.toml
	install -m 0644 README.md docs/*.md $(DESTDIR)$(PREFIX)/share/doc/aigate/

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	@clang-format --dry-run -Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build
