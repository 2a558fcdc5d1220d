"""``loom image dockerfile``: the Dockerfile that realises an image whole."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import loom
from loom import wire
from loom._controller._remote import image_spec
from loom._dockerfile import dockerfile
from loom._version import __version__
from tests.conftest import run_cli, write_module

FLOW = """
from pathlib import Path

import loom

here = Path(__file__).parent
boxed = loom.TaskEnvironment(
    "boxed",
    image=loom.Image.from_base("ghcr.io/org/base:1")
    .with_apt_packages("ffmpeg", "git")
    .with_pip_packages("cowsay==6.1", index_url="https://pypi.example/simple")
    .with_requirements(here / "requirements.txt")
    .with_commands("echo ready > /etc/ready")
    .with_env_vars({"MODE": "a b"}),
)
plain = loom.TaskEnvironment("plain")
"""


def test_the_dockerfile_realises_every_part_in_order(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("cowsay==6.0\n")
    flow = write_module(tmp_path / "flow.py", FLOW)
    done = run_cli("image", "dockerfile", str(flow), "boxed")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["# syntax=docker/dockerfile:1", "FROM ghcr.io/org/base:1"]
    apt = next(i for i, line in enumerate(lines) if "apt-get install" in line)
    assert "ffmpeg git" in lines[apt]
    heredoc = lines.index("COPY <<LOOM_EOF /opt/loom/requirements/0/requirements.txt")
    assert lines[heredoc + 1 : heredoc + 3] == ["cowsay==6.0", "LOOM_EOF"]
    install = next(i for i, line in enumerate(lines) if line.startswith("RUN uv pip install"))
    assert "--index-url https://pypi.example/simple" in lines[install]
    assert f"cowsay==6.1 loom=={__version__}" in lines[install]
    assert apt < heredoc < install < lines.index("RUN echo ready > /etc/ready")
    assert lines[-1] == 'ENV MODE="a b"'
    # an environment without an image: the default Python base and the runtime
    plain = run_cli("image", "dockerfile", str(flow), "plain")
    assert plain.returncode == 0 and "FROM python:3." in plain.stdout
    missing = run_cli("image", "dockerfile", str(flow), "nope")
    assert missing.returncode == 1 and "no task environment 'nope'" in missing.stderr


def test_a_locked_project_is_exported_in_the_image(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "d"\nversion = "1"\n')
    (tmp_path / "uv.lock").write_text("version = 1\n")
    spec = image_spec(loom.Image.from_debian_base().with_uv_project(tmp_path / "pyproject.toml"))
    assert spec is not None
    text = dockerfile(spec)
    assert "COPY <<LOOM_EOF /opt/loom/requirements/0/uv.lock" in text
    assert "uv export --frozen --no-hashes --no-emit-project" in text
    # a file that holds the heredoc's marker gets another one
    tricky = wire.ImageSpec(
        python="3.11", requirements=[wire.RequirementsFile(name="r.txt", content="LOOM_EOF\n")]
    )
    assert "COPY <<LOOM_EOF_ " in dockerfile(tricky)


def _builder() -> str | None:
    """A container builder that can build here (a daemon that answers), if any."""
    for tool in ("docker", "podman"):
        path = shutil.which(tool)
        if path and subprocess.run([path, "info"], capture_output=True).returncode == 0:
            return path
    return None


@pytest.mark.skipif(_builder() is None, reason="no container builder runs on this machine")
def test_a_builder_builds_the_dockerfile(tmp_path: Path) -> None:
    builder = _builder()
    assert builder is not None
    spec = wire.ImageSpec(python="3.11", apt_packages=["cowsay"], env_vars={"X": "1"})
    (tmp_path / "Dockerfile").write_text(dockerfile(spec))
    built = subprocess.run(
        [builder, "build", "-q", str(tmp_path)], capture_output=True, text=True, timeout=1800
    )
    assert built.returncode == 0, built.stderr
