# Set-up and everyday commands. Each target installs what it needs first.
export UV_PYTHON_DOWNLOADS := never
# Compile bytecode at install: with PYTHONDONTWRITEBYTECODE set, nothing would be cached later
# and every process (each remote action is one) would recompile its imports.
export UV_COMPILE_BYTECODE := 1
PY ?= python3
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)

.PHONY: run test lint bench install ide

# The virtual environment, rebuilt whenever the project or lock file changes.
.venv/.installed: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || test -x $(UV) || $(PY) -m pip install --quiet --user uv
	$(UV) sync --locked --all-extras
	.venv/bin/python -m compileall -q src
	@touch $@

install: .venv/.installed

## Run loom's main job: start the local platform (server, scheduler, process executor on
## 127.0.0.1:8377, SQLite and a data directory under ~/.loom) unless it is up, then run the
## example workflow on it.
run: .venv/.installed
	@.venv/bin/loom server status >/dev/null 2>&1 || .venv/bin/loom server start --detach
	.venv/bin/loom run --remote examples/hello.py main

## The IDE servers behind interactive tasks (code-server, JupyterLab), built once into .cache/ide.
# code-server's native modules compile from source: the Debian build packages come first
# (chromium is for the browser tests). `loom ide install` itself never runs apt-get.
IDE_DIR := $(CURDIR)/.cache/ide
IDE_DEBIAN_PACKAGES := build-essential pkg-config libkrb5-dev libx11-dev libxkbfile-dev \
	libsecret-1-dev chromium
SUDO := $(shell test "$$(id -u)" -eq 0 || echo sudo)

ide: .venv/.installed
	@missing=""; for p in $(IDE_DEBIAN_PACKAGES); do \
		dpkg -s $$p 2>/dev/null | grep -q '^Status: install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi
	LOOM_IDE_DIR=$(IDE_DIR) .venv/bin/loom ide install vscode jupyter

## Lint, type-check, check the layering, and run every test.
test: export LOOM_IDE_DIR := $(IDE_DIR)
test: .venv/.installed ide
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
