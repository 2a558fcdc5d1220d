"""Packaging loom's VS Code extension (``_extension/``) into a ``.vsix``, offline, with vsce."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .._version import __version__
from ..errors import IdeInstallError

#: The extension's source: plain JavaScript, packaged as it is (no build step).
EXTENSION_SOURCE = Path(__file__).with_name("_extension")
PUBLISHER = "loom"
NAME = "loom-interactive"
#: The id code-server knows the extension by (``--install-extension``, ``--list-extensions``).
EXTENSION_ID = f"{PUBLISHER}.{NAME}"
#: The extension's debugger type for launch configurations.
DEBUG_TYPE = "loom-python"

_SEMVER = re.compile(r"^\d+\.\d+\.\d+$")
_PACKAGE_TIMEOUT = 300


def extension_version() -> str:
    """The version the packaged extension gets: loom's, when it is a plain ``X.Y.Z``.

    Other loom versions (``1.2.0.dev3``, ``1.2.0rc1``) are not semver as VS Code wants it; the
    version written in the extension's own ``package.json`` is used then.
    """
    if _SEMVER.match(__version__):
        return __version__
    manifest = json.loads((EXTENSION_SOURCE / "package.json").read_text())
    return str(manifest["version"])


def vsix_name() -> str:
    """The file name :func:`package_extension` writes: the same for the same version."""
    return f"{EXTENSION_ID}-{extension_version()}.vsix"


def package_extension(vsce: Path, node: Path, out_dir: Path) -> Path:
    """Package the extension into ``out_dir`` and return the ``.vsix`` file's path.

    ``vsce`` is ``@vscode/vsce``'s JavaScript command (``node_modules/.bin/vsce``), its
    package directory, or a launcher that runs it (``bin/vsce`` of loom's code-server install,
    which brings its own Node); ``node`` is the Node.js binary that runs the JavaScript. The
    source is copied to a temporary directory first (the installed package is never written
    to), packaging needs no network, and the result replaces any earlier file of the same name
    atomically.
    """
    runner = _vsce_command(Path(vsce), Path(node))
    version = extension_version()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / vsix_name()
    with tempfile.TemporaryDirectory(prefix="loom-vsix-") as tmp:
        source = Path(tmp) / "extension"
        shutil.copytree(
            EXTENSION_SOURCE,
            source,
            ignore=shutil.ignore_patterns("__pycache__", "node_modules", "*.vsix"),
        )
        manifest_path = source / "package.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["version"] = version
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        staged = Path(tmp) / target.name
        command = [
            *runner,
            "package",
            "--no-dependencies",  # plain JavaScript: nothing to bundle, no npm run
            "--allow-missing-repository",  # otherwise vsce asks on the terminal
            "--skip-license",
            "--out",
            os.fspath(staged),
        ]
        try:
            done = subprocess.run(
                command,
                cwd=source,
                stdin=subprocess.DEVNULL,  # a prompt must fail, not hang
                capture_output=True,
                text=True,
                timeout=_PACKAGE_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise IdeInstallError(f"cannot package loom's VS Code extension: {e}") from e
        if done.returncode != 0 or not staged.is_file():
            detail = (done.stderr or done.stdout).strip()
            raise IdeInstallError(
                f"cannot package loom's VS Code extension (vsce exit code {done.returncode}): "
                f"{detail}"
            )
        # Copy next to the target, then rename: readers never see a partial file.
        partial = out_dir / f".{target.name}.{os.getpid()}.partial"
        shutil.copyfile(staged, partial)
        os.replace(partial, target)
    return target


def _vsce_command(vsce: Path, node: Path) -> list[str]:
    """How to run vsce: ``node <script>`` for its JavaScript, or a launcher as it is."""
    candidates = [vsce]
    if vsce.is_dir():
        candidates = [
            vsce / "vsce",
            vsce / "node_modules" / "@vscode" / "vsce" / "vsce",
            vsce / "node_modules" / ".bin" / "vsce",
        ]
    for candidate in candidates:
        if candidate.is_file():
            with candidate.open("rb") as f:
                first = f.readline()
            # A shell launcher (#!/bin/sh) picks its own Node; node would parse it as JavaScript.
            if first.startswith(b"#!") and b"node" not in first:
                return [os.fspath(candidate)]
            return [os.fspath(node), os.fspath(candidate)]
    raise IdeInstallError(f"@vscode/vsce is not installed at {vsce}")
