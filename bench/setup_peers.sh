#!/usr/bin/env bash
# Install the peer runtimes that the benchmarks compare loom against, each in its own venv:
#
#   bench/.flyte-venv  Flyte 2, for bench/local_fanout.py   (FLYTE_SPEC, default "flyte>=2,<3")
#   bench/.ray-venv    Ray 2, for bench/control_plane.py    (RAY_SPEC, default "ray==2.60.0")
#
# Both are gitignored and made with the machine's `python3 -m venv` (PYTHON to choose another).
# Idempotent: an existing venv is reused, and the peer is installed only if the venv cannot
# already import it. Set FLYTE_SPEC or RAY_SPEC to pin another version. Run from anywhere:
# `bash bench/setup_peers.sh`.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
FLYTE_SPEC="${FLYTE_SPEC:-flyte>=2,<3}"
RAY_SPEC="${RAY_SPEC:-ray==2.60.0}"

# install_peer VENV MODULE SPEC: create VENV if needed, then `pip install SPEC` unless MODULE
# (also the distribution's name) already imports in it.
install_peer() {
    local venv="$1" module="$2" spec="$3" version
    local probe="import importlib.metadata as m, $module; print(m.version('$module'))"
    if [ -x "$venv/bin/python" ]; then
        echo "setup_peers: reusing venv $venv"
    else
        echo "setup_peers: creating venv $venv with $("$PY" --version 2>&1) ($PY -m venv)"
        "$PY" -m venv "$venv"
    fi
    if version="$("$venv/bin/python" -c "$probe" 2>/dev/null)"; then
        echo "setup_peers: $module $version already installed; nothing to do"
        return
    fi
    echo "setup_peers: installing '$spec' into $venv"
    # The mirror's pip config names index folders that may be absent; hide those warnings only.
    "$venv/bin/python" -m pip install --quiet "$spec" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
    version="$("$venv/bin/python" -c "$probe")"
    echo "setup_peers: installed $module $version"
}

install_peer "$BENCH_DIR/.flyte-venv" flyte "$FLYTE_SPEC"
install_peer "$BENCH_DIR/.ray-venv" ray "$RAY_SPEC"

echo "setup_peers: done; '.venv/bin/python bench/local_fanout.py' now includes Flyte and"
echo "setup_peers: '.venv/bin/python bench/control_plane.py' includes Ray"
