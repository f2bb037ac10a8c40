# Two set-up commands for a fresh machine (see README): `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: demo test dev lint

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first: 2.13.0 is the CPU build on the build machines and satisfies the project's range.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# pip compiles what it installs, but not an editable project's own modules: where
	# PYTHONDONTWRITEBYTECODE is set (the CI machines) every process would compile them again,
	# 0.1-0.15 s of each `lora-assets` start and of each fork server.
	$(PY) -m compileall -q lora_assets
	touch $@

demo: $(VENV)/.installed
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VENV)/bin/lora-assets demo

test: $(VENV)/.installed
	# Two workers for the tests that each use one core; then the scale-out tests, which start
	# servers and worker processes of their own and need the whole machine.
	OMP_NUM_THREADS=1 $(VENV)/bin/python -m pytest -n 2 --ignore=lora_assets_tests/scale
	OMP_NUM_THREADS=1 LORA_ASSETS_LOAD_SUBJECTS=$${LORA_ASSETS_LOAD_SUBJECTS:-5} \
		$(VENV)/bin/python -m pytest lora_assets_tests/scale

dev: $(VENV)/.installed
	$(VENV)/bin/lora-assets subjects sync >/dev/null 2>&1 || true
	$(VENV)/bin/dagster dev -h $${HOST:-127.0.0.1} -p $${PORT:-3000}

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
