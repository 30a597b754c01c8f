# coffer's entry points: `make run` and `make test` on a fresh Debian 12 machine install what is
# missing, build and go. CMake does the building; this file only names the steps.
MAKEFLAGS += --no-print-directory
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS := -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOFFER_WERROR=ON
FORMAT_DIRS := $(wildcard include src tests bench)

.DEFAULT_GOAL := all
.PHONY: all deps build build-asan format-check test soak soak-cluster patroni-failover bench bench-http bench-feed bench-events bench-webhooks bench-cluster bench-peers cluster cluster-stop run format clean

all: build

deps:
	scripts/install-deps

build: deps
	cmake -S . -B build $(CMAKE_FLAGS)
	cmake --build build -j$(JOBS)

# clang so that libFuzzer is available to the fuzz targets; gcc if clang is missing. The
# compiler is chosen when the recipe runs, after `deps` may have installed clang.
build-asan: deps
	compiler="$$(command -v clang || command -v gcc)"; \
	cmake -S . -B build-asan $(CMAKE_FLAGS) -DCOFFER_SANITIZE=ON -DCMAKE_C_COMPILER="$$compiler"
	cmake --build build-asan -j$(JOBS)

# The checked-in .clang-format is the style; a file out of it fails the test run.
format-check: deps
	find $(FORMAT_DIRS) -type f \( -name '*.c' -o -name '*.h' \) -exec clang-format --dry-run -Werror {} +

test: deps format-check build build-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	ctest --test-dir build-asan --output-on-failure -j2
	ctest --test-dir build --output-on-failure -j2

# The model test and the kill -9 crash test (also with a 16 MiB memory budget, which evicts) for
# minutes instead of the seconds of `make test`, then soak-cluster and patroni-failover.
soak: build
	./build/model_test --seeds 2000 --events 20000
	./build/model_test --seeds 200 --events 20000 --durable
	./build/crash_test --iterations 100
	./build/crash_test --iterations 100 --memory-max 16M
	$(MAKE) soak-cluster
	$(MAKE) patroni-failover

# Each fault of tests/integration/test_failover.py (kill -9 of the leader, SIGSTOP/SIGCONT of the
# leader, loss of the PostgreSQL primary and promotion of its standby) SOAK_ROUNDS times instead
# of the once of `make test`, then the same on instances with a 16 MiB memory budget that evict
# (test_failover_evict): about 10 s a round each, 50 minutes for 50. Needs PostgreSQL 15 (deps).
SOAK_ROUNDS ?= 50
soak-cluster: build
	cd tests/integration && COFFER_BINARY=$(CURDIR)/build/coffer PYTHONDONTWRITEBYTECODE=1 \
		COFFER_FAILOVER_ROUNDS=$(SOAK_ROUNDS) python3 -m unittest -v test_failover
	cd tests/integration && COFFER_BINARY=$(CURDIR)/build/coffer PYTHONDONTWRITEBYTECODE=1 \
		COFFER_FAILOVER_ROUNDS=$(SOAK_ROUNDS) python3 -m unittest -v test_failover_evict

# docs/operations.md's cluster with Patroni, on loopback: one etcd, three Patroni nodes with the
# documented settings, two coffer instances; while a client writes, the Patroni primary's machine
# is lost (kill -9), then it rejoins and a switchover moves the primary. Fails unless writes
# resume and every acknowledged transfer is there once. Installs patroni and etcd from Debian
# when missing (as root). About 2.5 minutes.
patroni-failover: build
	scripts/patroni-failover 10

# Embedded targets (docs/benchmarks.md): 100,000 accounts, full batches, uniform and hot workloads.
BENCH_FLAGS := --embedded --accounts 100000 --transfers 20000000 --batch 8190
# Then a ledger ten times larger than its memory budget: the same transfers in memory, and
# durable with a 128 MiB budget so that memory evicts what the index holds (docs/benchmarks.md).
EVICT_DIR ?= /tmp/coffer-bench-evict
bench: build
	./build/coffer bench $(BENCH_FLAGS) --workload uniform
	./build/coffer bench $(BENCH_FLAGS) --workload hot
	./build/coffer bench --embedded --transfers 4000000
	rm -rf $(EVICT_DIR)
	./build/coffer bench --embedded --durable $(EVICT_DIR) --index on --memory-max 128M --transfers 4000000

# HTTP targets (docs/benchmarks.md) on a real durable server: every workload, batched, and wrk.
bench-http: build
	scripts/bench-http 10 3

# The change feed (docs/benchmarks.md): the writer with and without a consumer following the
# log, interleaved, then one consumer reading a 10-million-transfer log from the start.
bench-feed: build
	scripts/bench-feed 3 2000000 10000000

# The change feed over HTTP (docs/benchmarks.md): one consumer paging GET /v1/events over a
# 1-million-transfer log, then the server's writer alone and with one event stream.
bench-events: build
	scripts/bench-events 3 10 1000000

# Webhooks (docs/benchmarks.md): the served writer with and without a webhook attached (one
# change per POST, batches of 100, batches of 100 paced by batch_wait_ms 20), to a lean local
# receiver that checks signatures and to a Node one that parses every body, and the rate each
# delivers at.
bench-webhooks: build
	scripts/bench-webhooks 10 3

# The log in PostgreSQL (docs/benchmarks.md): the leader with its log in a PostgreSQL primary +
# synchronous standby against the local log, single requests, batches of 1,000 and embedded
# batches of 8,190, in interleaved rounds; failover time (kill -9 of the leader, 10 times); and
# PostgreSQL's own best pattern on the same pair. A short run: make bench-cluster
# BENCH_CLUSTER_ARGS="3 1" FAILOVERS=3 EMBEDDED_TRANSFERS=300000 (seconds per run, rounds).
BENCH_CLUSTER_ARGS ?= 10 3
bench-cluster: build
	scripts/bench-cluster $(BENCH_CLUSTER_ARGS)

# coffer against PostgreSQL and Redis on this machine in one run (docs/benchmarks-peers.md):
# installs and starts both on loopback, durable, runs every workload at 1, 8 and 64 clients,
# checks each peer's data, stops what it started. PEERS_FLAGS: e.g. --duration 10 --runs 5.
PEERS_FLAGS ?=
bench-peers: build
	bench/peers/run $(PEERS_FLAGS)

# A demo cluster on loopback (docs/operations.md, "Running a cluster"): PostgreSQL primary +
# synchronous standby and three `coffer serve --log` instances in CLUSTER_DIR; prints how to use
# it. `make cluster-stop` stops exactly what it started and removes the directory.
CLUSTER_DIR ?= /tmp/coffer-cluster
cluster: build
	scripts/cluster start $(CLUSTER_DIR)

cluster-stop:
	scripts/cluster stop $(CLUSTER_DIR)

run: build
	./build/coffer serve --listen 127.0.0.1:8080 --data ./coffer-data

format:
	find $(FORMAT_DIRS) -type f \( -name '*.c' -o -name '*.h' \) -exec clang-format -i {} +

clean:
	rm -rf build build-asan
