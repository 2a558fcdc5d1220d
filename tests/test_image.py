"""``loom.Image``: checked when defined, and what the server is sent to build."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import loom
from loom import wire
from loom._controller._remote import image_spec
from loom.errors import TaskDefinitionError

HERE = f"{sys.version_info[0]}.{sys.version_info[1]}"


def test_bad_specs_fail_when_the_image_is_defined(tmp_path: Path) -> None:
    base = loom.Image.from_debian_base()
    with pytest.raises(TaskDefinitionError, match="'pandas>>2' is not a requirement"):
        base.with_pip_packages("pandas>>2")
    with pytest.raises(TaskDefinitionError, match="cannot read .*missing.txt: No such file"):
        base.with_requirements(tmp_path / "missing.txt")
    bad = tmp_path / "requirements.txt"
    bad.write_text("cowsay==6.1\nnot a requirement!\n")
    with pytest.raises(TaskDefinitionError, match="line 2"):
        base.with_requirements(bad)
    lock = tmp_path / "uv.lock"
    lock.write_text("version = 1\n")
    with pytest.raises(TaskDefinitionError, match="cannot read .*pyproject.toml"):
        base.with_requirements(lock)  # a lock is nothing without its project
    (tmp_path / "pyproject.toml").write_text("[project\n")
    with pytest.raises(TaskDefinitionError, match="pyproject.toml is not valid TOML"):
        base.with_uv_project(tmp_path / "pyproject.toml")
    project = tmp_path / "pyproject.toml"
    project.write_text('[project]\nname = "p"\ndependencies = ["cowsay==6.1", "x y"]\n')
    with pytest.raises(TaskDefinitionError, match="'x y' is not a requirement"):
        base.with_requirements(project)


def test_a_requirement_files_content_not_its_path_makes_the_environment(tmp_path: Path) -> None:
    one, two = tmp_path / "a" / "requirements.txt", tmp_path / "b" / "requirements.txt"
    for path in (one, two):
        path.parent.mkdir()
        path.write_text("cowsay==6.1\n")
    first = image_spec(loom.Image.from_debian_base().with_requirements(one))
    second = image_spec(loom.Image.from_debian_base().with_requirements(two))
    assert first is not None and second is not None
    assert wire.environment_digest(first) == wire.environment_digest(second)
    two.write_text("cowsay==6.0\n")
    third = image_spec(loom.Image.from_debian_base().with_requirements(two))
    assert third is not None
    assert wire.environment_digest(third) != wire.environment_digest(first)


def test_what_the_server_is_sent() -> None:
    # nothing to build: no spec at all (the runtime's own environment)
    assert image_spec(None) is None and image_spec("auto") is None
    assert image_spec(loom.Image.from_debian_base()) is None
    named = loom.Image.from_debian_base(name="a").with_pip_packages("cowsay==6.1")
    other = loom.Image.from_debian_base(name="b").with_pip_packages("cowsay==6.1")
    spec = image_spec(named)
    assert spec == wire.ImageSpec(python=HERE, packages=["cowsay==6.1"])
    other_spec = image_spec(other)
    assert other_spec is not None
    assert wire.environment_digest(spec) == wire.environment_digest(other_spec)  # names aside
    assert wire.needs_environment(spec, HERE)
    indexed = image_spec(
        loom.Image.from_debian_base().with_pip_packages(
            "x", index_url="https://i.example/simple", extra_index_urls="https://e", pre=True
        )
    )
    assert indexed is not None
    assert (indexed.index_url, indexed.extra_index_urls, indexed.pre) == (
        "https://i.example/simple",
        ["https://e"],
        True,
    )
    # environment variables alone need no build
    variables = image_spec(loom.Image.from_debian_base().with_env_vars({"A": "1"}))
    assert variables is not None and not wire.needs_environment(variables, HERE)
    # what only a container can do is named as the calls that asked for it
    boxed = image_spec(
        loom.Image.from_base("ghcr.io/x/y:1").with_apt_packages("ffmpeg").with_commands("make")
    )
    assert boxed is not None
    assert wire.container_parts(boxed) == [
        "from_base('ghcr.io/x/y:1')",
        "with_apt_packages('ffmpeg')",
        "with_commands('make')",
    ]
    ref = image_spec("ghcr.io/org/image:tag")  # a plain string: a container image
    assert ref is not None and wire.container_parts(ref) == ["from_base('ghcr.io/org/image:tag')"]


def test_uv_scripts_ask_for_this_python_when_it_satisfies_them(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text('# /// script\n# requires-python = ">=3.8"\n# dependencies = []\n# ///\n')
    assert loom.Image.from_uv_script(script, name="s").python_version == HERE
    script.write_text('# /// script\n# requires-python = "==3.99.*"\n# ///\n')
    assert loom.Image.from_uv_script(script, name="s").python_version == "3.99"


def test_clone_changes_fields() -> None:
    image = loom.Image.from_debian_base(name="a").with_pip_packages("cowsay==6.1")
    cloned = image.clone(name="b", python_version=(3, 12))
    assert (cloned.name, cloned.python_version, cloned.pip_packages) == (
        "b",
        "3.12",
        ("cowsay==6.1",),
    )
    with pytest.raises(TaskDefinitionError, match="clone"):
        image.clone(nonsense=1)


def test_the_server_takes_no_installer_options_for_packages() -> None:
    from pydantic import ValidationError

    for bad in (
        {"packages": ["--index-url=https://evil.example"]},
        {"packages": ["-e /etc"]},
        {"index_url": "file:///etc"},
        {"extra_index_urls": ["/tmp/wheels"]},
    ):
        with pytest.raises(ValidationError):
            wire.ImageSpec.model_validate({"python": HERE, **bad})


def test_a_local_run_says_once_which_declared_packages_are_missing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = loom.TaskEnvironment(
        "imaged",
        image=loom.Image.from_debian_base().with_pip_packages("cowsay==6.1", "pydantic>=2"),
    )

    @env.task
    def one(i: int) -> int:
        return i

    @env.task
    def many(n: int) -> int:
        return sum(one(i) for i in range(n))

    with caplog.at_level("WARNING", logger="loom"):
        assert loom.run(many, 3).outputs() == 3
    said = [r.getMessage() for r in caplog.records if "not installed here" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0]
    assert "'imaged' declares cowsay," in said[0]  # pydantic is installed: not named
    assert "pydantic" not in said[0]
