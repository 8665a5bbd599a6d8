# Caliber — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
.DEFAULT_GOAL := help
# Targets that need Caliber installed depend on this stamp, so the install runs once (and
# again when pyproject.toml changes) instead of on every `make up`.
INSTALLED := build/.installed
# Not the `caliber` script: it works wherever pip put the script, on the PATH or not.
CALIBER := $(PYTHON) -m tooling.cli

.PHONY: help install up down reset status demo test unit lint bench bench-pipeline chaos \
	cluster-up cluster-down cluster-status cluster-test bench-cluster

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-10s %s\n", $$1, $$2}'

install: ## install Caliber, its Python client (clients/python) and the development tools (idempotent)
	@PIP_ROOT_USER_ACTION=ignore $(PYTHON) -m pip install -q --disable-pip-version-check -e '.[dev]' -e clients/python
	@$(PYTHON) -c "import shared, services, tooling, bench, caliber_client"
	@mkdir -p $(dir $(INSTALLED)) && touch $(INSTALLED)

$(INSTALLED): pyproject.toml clients/python/pyproject.toml
	@$(MAKE) --no-print-directory install

up: $(INSTALLED) ## start Kafka, Redis and PostgreSQL on loopback, create topics, migrate
	@$(CALIBER) stack up

down: ## stop every service and the local stack (all data is kept)
	@$(CALIBER) stack down

reset: ## DELETE the local stack's data, after a confirmation
	@$(CALIBER) stack reset

status: ## show the local stack and the services
	@$(CALIBER) stack status; $(CALIBER) services status

demo: up ## run the demo: services, simulated traffic, a summary
	@$(CALIBER) demo run

test: up ## run the whole test suite against the local stack
	@$(PYTHON) -m pytest -q

unit: $(INSTALLED) ## run the unit tests only (no servers needed)
	@$(PYTHON) -m pytest -q tests/unit clients/python/tests -m "not integration"

cluster-up: $(INSTALLED) ## start the cluster profile: 3-broker Kafka, 3-master Redis Cluster, PostgreSQL
	@CALIBER_STACK_PROFILE=cluster $(CALIBER) stack up

cluster-down: ## stop the cluster profile's servers (data is kept; the single stack is left alone)
	@CALIBER_STACK_PROFILE=cluster $(CALIBER) stack down

cluster-status: ## show the cluster profile's servers
	@CALIBER_STACK_PROFILE=cluster $(CALIBER) stack status

cluster-test: $(INSTALLED) ## two replicas of every worker on a private Kafka and Redis cluster, with kills
	@$(PYTHON) -m pytest -q -s -m cluster tests/integration/test_cluster_campaign.py

chaos: $(INSTALLED) ## crash campaign on a private stack: 100,000 events, 20 service kills, each server killed once
	@CALIBER_CHAOS_EVENTS=$${CALIBER_CHAOS_EVENTS:-100000} CALIBER_CHAOS_KILLS=$${CALIBER_CHAOS_KILLS:-20} \
		$(PYTHON) -m pytest -q -s -m chaos tests/integration/test_chaos.py

lint: $(INSTALLED) ## ruff check, ruff format --check and mypy
	@ruff check . && ruff format --check . && mypy

bench: up ## run the benchmarks and print throughput, latency percentiles and memory
	@echo "== ingest: one process, pre-loaded input"; $(PYTHON) -m bench.ingest
	@echo "== produce -> decision latency at 2,000 events/s"; $(PYTHON) -m bench.policy
	@echo "== gateway POST /api/predictions"; $(PYTHON) -m bench.gateway
	@echo "== recorder rows/s into PostgreSQL"; $(PYTHON) -m bench.recorder
	@echo "== recorder at scale: 10 M predictions, 1 M pending labels"; $(PYTHON) -m bench.recorder_scale
	@echo "== aggregator: labeled events/s, GET /api/calibration, Redis per model per day"; $(PYTHON) -m bench.aggregator
	@echo "== drift worker: 20 numeric + 5 categorical features"; $(PYTHON) -m bench.drift
	@echo "== routing: decide latency at 2,000/s, router outcomes/s, Redis per (goal, path)"; $(PYTHON) -m bench.router
	@echo "== segments: Redis of 1,000 calibration segments, refit and serve cost"; $(PYTHON) -m bench.segments
	@echo "== calibrator rollout: serve(), the policy CPU a candidate adds, POST /api/calibrate"; $(PYTHON) -m bench.rollout
	@echo "== ownership fence: fenced saves/s, a round over 1,000 model versions, Redis per model version"; $(PYTHON) -m bench.ownership
	@echo "== Avro codec of the batch records: fastavro against the columnar codec"; $(PYTHON) -m bench.codec

bench-pipeline: up ## the whole pipeline under load: highest sustained rate, latency, freshness, CPU, memory
	@$(PYTHON) -m bench.pipeline --out reports

BENCH_CLUSTER_ARGS ?=
bench-cluster: up ## back to back: one replica on single servers, then two replicas on the clusters
	@echo "== one replica of every worker; one Kafka broker, one Redis"
	@$(PYTHON) -m bench.pipeline --replicas 1 --out reports/single $(BENCH_CLUSTER_ARGS)
	@echo "== two replicas of every worker; 3-broker Kafka, 3-master Redis Cluster"
	@$(PYTHON) -m bench.pipeline --replicas 2 --cluster --out reports/cluster $(BENCH_CLUSTER_ARGS)
