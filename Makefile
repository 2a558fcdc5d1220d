# Set-up and everyday commands. Each target installs what it needs first.
export UV_PYTHON_DOWNLOADS := never
# Compile bytecode at install: with PYTHONDONTWRITEBYTECODE set, nothing would be cached later
# and every process (each remote action is one) would recompile its imports.
export UV_COMPILE_BYTECODE := 1
PY ?= python3
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)

.PHONY: run test lint bench install

# The virtual environment, rebuilt whenever the project or lock file changes.
.venv/.installed: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || test -x $(UV) || $(PY) -m pip install --quiet --user uv
	$(UV) sync --locked --all-extras
	.venv/bin/python -m compileall -q src
	@touch $@

install: .venv/.installed

## Run loom's main job: an example workflow, locally.
run: .venv/.installed
	.venv/bin/loom run examples/hello.py main

## Lint, type-check, check the layering, and run every test.
test: .venv/.installed
	.venv/bin/ruff check src tests examples bench
	.venv/bin/ruff format --check src tests examples bench
	.venv/bin/mypy
	.venv/bin/lint-imports
	.venv/bin/pytest -n 2

lint: .venv/.installed
	.venv/bin/ruff check --fix src tests examples bench
	.venv/bin/ruff format src tests examples bench

## Benchmarks against peers (see bench/README.md).
bench: .venv/.installed
	.venv/bin/python bench/local_fanout.py
