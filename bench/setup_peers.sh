#!/usr/bin/env bash
# Install the peer runtimes that bench/local_fanout.py compares loom against.
#
# Creates bench/.flyte-venv (gitignored) with the machine's `python3 -m venv` and installs Flyte 2
# (`pip install flyte`) into it. Idempotent: an existing venv is reused, and flyte is installed
# only if the venv cannot already import it. Set FLYTE_SPEC to pin another version
# (default: "flyte>=2,<3"). Run from anywhere: `bash bench/setup_peers.sh`.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$BENCH_DIR/.flyte-venv"
PY="${PYTHON:-python3}"
FLYTE_SPEC="${FLYTE_SPEC:-flyte>=2,<3}"

if [ -x "$VENV/bin/python" ]; then
    echo "setup_peers: reusing venv $VENV"
else
    echo "setup_peers: creating venv $VENV with $("$PY" --version 2>&1) ($PY -m venv)"
    "$PY" -m venv "$VENV"
fi

if version="$("$VENV/bin/python" -c 'import importlib.metadata as m, flyte; print(m.version("flyte"))' 2>/dev/null)"; then
    echo "setup_peers: flyte $version already installed; nothing to do"
else
    echo "setup_peers: installing '$FLYTE_SPEC' into $VENV"
    # The mirror's pip config names index folders that may be absent; hide those warnings only.
    "$VENV/bin/python" -m pip install --quiet "$FLYTE_SPEC" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
    version="$("$VENV/bin/python" -c 'import importlib.metadata as m, flyte; print(m.version("flyte"))')"
    echo "setup_peers: installed flyte $version"
fi

echo "setup_peers: done; run '.venv/bin/python bench/local_fanout.py' to include Flyte"
