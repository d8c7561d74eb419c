# Set-up and everyday commands. Every target installs what it needs first, so each works on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

TRAIN_STAMP := $(VENV)/.installed-train
# Every extra but gpu (onnxruntime-gpu replaces cpu's onnxruntime) and train (torch: the model targets only).
EXTRAS := cpu,dev,serve,postgres,proxy,openai,langchain,load

.PHONY: install haproxy prometheus services serve bench-serve rayservice test run bench benchmark soak regression-guard rules-check data eval-data models folds fp16 evaluate clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

# Training needs torch; 2.13.0 is pinned because on these machines it resolves to the CPU build.
$(TRAIN_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS),train]"
	touch $@

install: $(STAMP)

## An haproxy binary for Serve's high-throughput mode: ray[serve]'s bundled one, else one on the PATH, else
## Debian's (as root). Never fails: without haproxy, Serve runs with its default proxy (deployments/launch.py).
haproxy: install
	@if $(BIN)/python -c "import sys; from deployments.launch import haproxy_binary; sys.exit(haproxy_binary() is None)"; then \
		echo "haproxy: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null) \
			&& echo "haproxy: installed Debian's" || echo "haproxy: install failed; Serve will use its default proxy"; \
	else \
		echo "haproxy: not available; Serve will use its default proxy"; \
	fi

## promtool, which tests/unit/test_observability_configs.py runs on configs/prometheus/: one on the PATH, else Debian's
## prometheus package (as root), installed without starting its server: a policy-rc.d forbids service starts during
## the install (Docker images ship one; else a temporary one), and under systemd the unit is then disabled and stopped.
## Never fails: without promtool those tests fail and say to run this target.
prometheus:
	@if command -v promtool >/dev/null 2>&1; then \
		echo "promtool: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		rcd=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
			rcd=1; printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; fi; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			prometheus >/dev/null) && echo "promtool: installed Debian's" || echo "promtool: install failed"; \
		if [ -n "$$rcd" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
		if [ -d /run/systemd/system ]; then systemctl disable --now prometheus >/dev/null 2>&1 || true; \
		elif [ -x /etc/init.d/prometheus ] && /etc/init.d/prometheus status >/dev/null 2>&1; then \
			/etc/init.d/prometheus stop >/dev/null 2>&1 || true; fi; \
	else \
		echo "promtool: not available; the promtool checks in tests/unit/test_observability_configs.py will fail"; \
	fi

## Serve the app on http://127.0.0.1:8000 (Ctrl-C stops it): the high-throughput mode where haproxy runs.
serve: haproxy
	$(BIN)/python -m deployments.launch serve_config.yaml

## The KubeRay RayService manifest (deployments/README.md, "On Kubernetes (KubeRay)"), written to rayservice.yaml:
## `make rayservice IMAGE=registry.example/safepath:0.1.0`; GPU: SERVE_CONFIG=serve_config.gpu.yaml KUBERAY_ARGS=--gpu.
SERVE_CONFIG ?= serve_config.yaml
rayservice: install
	@test -n "$(IMAGE)" || { echo "rayservice: name the image: make rayservice IMAGE=registry/safepath:tag"; exit 2; }
	$(BIN)/python -m deployments.kuberay $(SERVE_CONFIG) --image $(IMAGE) $(KUBERAY_ARGS) > rayservice.yaml.tmp
	mv rayservice.yaml.tmp rayservice.yaml

## The Serve graph over HTTP against the in-process filter, same traces, same run (docs/BENCHMARKS.md, "Serving").
bench-serve: haproxy
	$(BIN)/python -m benchmarks.serve_graph

## Redis and PostgreSQL binaries for the tests (tests/services.py uses the machine's servers where they answer,
## else starts throwaway ones from these): Debian's packages, as root, where missing. Never fails.
services:
	@command -v redis-server >/dev/null 2>&1 && echo "redis-server: found" || { \
		[ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null) \
		&& echo "redis-server: installed Debian's" || echo "redis-server: not available"; }
	@{ command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; } && echo "postgresql: found" || { \
		[ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null) \
		&& echo "postgresql: installed Debian's" || echo "postgresql: not available"; }

## Run the tests (what .ci/run calls); tests/integration starts one Ray Serve instance for its test_serve_* files.
test: haproxy prometheus services
	$(BIN)/ruff check .
	$(BIN)/python -m pytest
	$(BIN)/python -m benchmarks.regression_guard

## The main job for now: check the rules, filter an example trace, evaluate the fixture set.
run: install
	$(BIN)/safepath rules check
	$(BIN)/safepath filter --file examples/trace_exfiltration.txt
	$(BIN)/safepath eval tests/fixtures/eval/traces.jsonl

## Micro-benchmarks (pytest-benchmark); figures go to docs/BENCHMARKS.md by hand.
bench: install
	$(BIN)/python -m pytest benchmarks --benchmark-enable --benchmark-only -q

## The benchmark report (7-9 minutes on two cores): micro-benchmarks, in-process beside the graph, locust sweeps,
## replica memory; rewrites docs/BENCHMARKS.md's generated section and docs/benchmarks/*.png.
benchmark: haproxy
	$(BIN)/python -m benchmarks.report

## Soak test and leak check (benchmarks/soak.py): `make soak SOAK_DURATION_S=3600`; SOAK_ARGS=--short for a smoke test.
SOAK_DURATION_S ?= 1200
soak: haproxy
	$(BIN)/python -m benchmarks.soak --duration-s $(SOAK_DURATION_S) $(SOAK_ARGS)

## Hot paths timed against a reference workload and compared with benchmarks/baseline.json (`make test` runs it;
## GUARD_ARGS=--update-baseline after an accepted change, then commit the file).
regression-guard: install
	$(BIN)/python -m benchmarks.regression_guard $(GUARD_ARGS)

rules-check: install
	$(BIN)/safepath rules check

## The training corpus: the written traces (models/corpus/written/) checked, de-duplicated, step-labelled and split
## into models/data/corpus.jsonl (built, not committed) with its data card models/data/DATACARD.md.
data: install
	$(BIN)/python -m models.corpus.build

## HarmBench as comply and refuse traces (build/eval/), the external test set: evaluation only.
eval-data: install
	$(BIN)/python -m models.harmbench_traces

## Retrain the learned stages from the corpus (about an hour and a half on two cores). Not needed to serve.
## The shipped models learned from corpus v2.4, the writers through w56 (models/corpus/writers.py): the corpus has
## grown since (w57-w87 were written for measuring them), and `make models CORPUS_THROUGH=` trains on all of it.
CORPUS_THROUGH ?= w56
models: $(TRAIN_STAMP) data
	$(BIN)/python -m models.train_gate --through "$(CORPUS_THROUGH)"
	$(BIN)/python -m models.train_safety --through "$(CORPUS_THROUGH)"
	$(BIN)/python -m models.export_semantic

## The cross-writer folds' models (build/folds/): four trainings, each leaving a quarter of the writers out, from the
## same writers as the shipped models (hours on two cores; folds already newer than the corpus are kept).
folds: $(TRAIN_STAMP) data
	$(BIN)/python -m models.folds --through "$(CORPUS_THROUGH)"

## Rebuild the word-embedding data the committed fp16 (GPU) models leave out; needs no torch.
fp16: install
	$(BIN)/python -m models.onnx_export derive models/semantic-minilm/model.fp16.onnx
	$(BIN)/python -m models.onnx_export derive models/safety-minilm/model.fp16.onnx
	$(BIN)/python -m models.onnx_export derive models/trace-minilm/model.fp16.onnx

## docs/EVALUATION.md: every profile and each stage alone on the corpus test split, the cross-writer folds,
## shared/eval/dev.jsonl (SAFEPATH_DEV_SET elsewhere) and HarmBench; the cascade sweep on dev.
evaluate: $(TRAIN_STAMP) data eval-data folds
	$(BIN)/python -m models.evaluate

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
