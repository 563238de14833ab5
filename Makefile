# mmgpd: two-command setup (`make install`, then `make test` / `make demo`).
SHELL := /bin/bash
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=

.PHONY: install test demo demo-det bench bench-quick bench-reparam check-env clean-venv

## install: create .venv and install the pinned OpenMMLab stack (idempotent)
install:
	bash tools/install_env.sh

## demo: GPD from scratch on the embedded digits data, extract + test the student
demo: install
	$(PYTHON) tools/demo.py $(DEMO_ARGS)

## demo-det: GPD for detection on the generated shapes set (RetinaNet-R18; DEMO_ARGS="--detector faster-rcnn" or mask-rcnn: two-stage)
demo-det: install
	$(PYTHON) tools/demo_det.py $(DEMO_ARGS)

## bench: all benchmarks (exactness, coverage, ir_time, cost, accuracy and capacity gap on digits; 101 min on 2 cores, 2026-12-02 18:21 UTC: see README) -> results/
bench: install
	$(PYTHON) -m benchmarks.run_all $(BENCH_ARGS)

## bench-quick: smoke test of `make bench` (a few minutes), into a temporary dir
bench-quick: install
	$(PYTHON) -m benchmarks.run_all --quick $(BENCH_ARGS)

## bench-reparam: cost of CBR per step and of extraction (tools/benchmark_reparam.py)
bench-reparam: install
	$(PYTHON) tools/benchmark_reparam.py

## check-env: print the version matrix and run mmcv.ops.nms on CPU
check-env: install
	$(PYTHON) tools/check_env.py

## test: install if needed, then run the test suite
test: install
	$(PYTHON) -m pytest $(PYTEST_ARGS)

## clean-venv: remove .venv (the cached mmcv wheel in ~/.cache/mmgpd stays)
clean-venv:
	rm -rf $(VENV)
