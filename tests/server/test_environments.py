"""The image environment cache (``loom.server._environments``), on its own: real uv builds."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from loom import wire
from loom.server._environments import Environments, hide_url_credentials

pytestmark = pytest.mark.e2e

HERE = f"{sys.version_info[0]}.{sys.version_info[1]}"


def test_a_build_cleans_up_what_a_killed_one_left(tmp_path: Path) -> None:
    # a server killed (kill -9) in the middle of a build, or of a delete, leaves its temporary
    # directory behind: the next build of that environment removes it
    envs = Environments(tmp_path, {k: v for k, v in os.environ.items() if k != "LOOM_HOME"})
    spec = wire.ImageSpec(python=HERE, packages=["cowsay==6.1"])
    key = envs.key(spec)
    half_built = tmp_path / f".{key}-abc123"
    half_deleted = tmp_path / f".deleted-{key}-def456"
    other = tmp_path / ".0123456789abcdef0123456789abcdef-keep"
    for directory in (half_built, half_deleted, other):
        (directory / "lib").mkdir(parents=True)
    built = asyncio.run(envs.ensure(spec))
    assert built.python.exists() and not half_built.exists() and not half_deleted.exists()
    assert other.exists()  # another environment's build is none of this one's business
    assert [p.name for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith(f".{key}")] == []


def test_build_logs_show_no_url_credentials() -> None:
    text = "Looking in https://user:s3cret@pypi.example/simple and http://tok@x.io/a, not https://pypi.org/simple"
    hidden = hide_url_credentials(text)
    assert "s3cret" not in hidden and "tok@" not in hidden
    assert "https://***@pypi.example/simple" in hidden and "https://pypi.org/simple" in hidden
