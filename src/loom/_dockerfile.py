"""The Dockerfile that realises an image spec whole, container parts included
(``loom image dockerfile``): for a builder such as Docker, Podman or Buildah, where a task's
image needs what a Python environment cannot give (a base image, Debian packages, commands).

Requirement files are written inline (BuildKit heredocs, ``# syntax=docker/dockerfile:1``), so
the Dockerfile needs no build context. The loom runtime is installed at this client's version
from the package index: point ``--index-url`` at one that has it, or add a wheel.
"""

from __future__ import annotations

import json
import shlex

from . import wire
from ._version import __version__

__all__ = ["dockerfile"]


def dockerfile(spec: wire.ImageSpec) -> str:
    """A Dockerfile that builds ``spec``: its base (or ``python:<version>-slim-bookworm``),
    Debian packages, the Python packages and requirement files with uv, the loom runtime,
    its commands and environment variables, in that order."""
    base = spec.base or f"python:{spec.python}-slim-bookworm"
    lines = ["# syntax=docker/dockerfile:1", f"FROM {base}"]
    if spec.apt_packages:
        packages = " ".join(shlex.quote(p) for p in spec.apt_packages)
        lines.append(
            "RUN apt-get update && apt-get install -y --no-install-recommends "
            f"{packages} && rm -rf /var/lib/apt/lists/*"
        )
    lines.append("RUN python -m pip install --no-cache-dir uv")
    install = ["uv", "pip", "install", "--system", "--compile-bytecode"]
    install += wire.index_options(spec)
    for i, file in enumerate(spec.requirements):
        directory = f"/opt/loom/requirements/{i}"
        if file.project is not None:  # a uv.lock: exported with its project
            lines += _heredoc(f"{directory}/pyproject.toml", file.project)
            lines += _heredoc(f"{directory}/uv.lock", file.content)
            lines.append(
                f"RUN uv {' '.join(wire.LOCK_EXPORT)} --project {directory} "
                f"-o {directory}/requirements.txt"
            )
            install += ["-r", f"{directory}/requirements.txt"]
        else:
            name = "requirements.txt" if not file.name.endswith(".toml") else "pyproject.toml"
            lines += _heredoc(f"{directory}/{name}", file.content)
            install += ["-r", f"{directory}/{name}"]
    install += [*spec.packages, f"loom=={__version__}"]
    lines.append("RUN " + " ".join(shlex.quote(part) for part in install))
    lines += [f"RUN {command}" for command in spec.commands]
    lines += [f"ENV {name}={json.dumps(value)}" for name, value in sorted(spec.env_vars.items())]
    return "\n".join(lines) + "\n"


def _heredoc(path: str, content: str) -> list[str]:
    marker = "LOOM_EOF"
    while marker in content:
        marker += "_"
    return [f"COPY <<{marker} {path}", *content.rstrip("\n").split("\n"), marker]
