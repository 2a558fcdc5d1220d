"""The loom server the benchmarks measure: a real ``python -m loom.server`` on a free loopback
port, with a throwaway data directory and none of the caller's ``LOOM_*`` settings (so
``~/.loom`` does not affect the figures)."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """The server, started (and ready) on construction; ``env`` is what a ``loom`` client
    process needs to reach it, ``start_s`` how long it took to be ready."""

    def __init__(self, workdir: Path, env: Mapping[str, str] | None = None) -> None:
        self.data = workdir / "data"
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LOOM_")} | {
            "LOOM_HOME": str(self.data),
            "LOOM_CONFIG": str(self.data / "config.yaml"),
            **(env or {}),
        }
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [str(PYTHON), "-m", "loom.server", "--port", str(self.port), "--data-dir",
             str(self.data)],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if "loom server ready at" in line:
                break
        else:
            raise SystemExit("the server did not start")
        self.start_s = time.perf_counter() - started
        # keep reading its output, or a chatty server would block on a full pipe mid-benchmark
        threading.Thread(target=_discard, args=(self.process.stdout,), daemon=True).start()

    @functools.cached_property
    def api_key(self) -> str:
        """The admin key the server wrote to its client configuration at its first start."""
        import yaml

        return str(yaml.safe_load((self.data / "config.yaml").read_text())["api_key"])

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _discard(stream: IO[str]) -> None:
    for _ in stream:
        pass
