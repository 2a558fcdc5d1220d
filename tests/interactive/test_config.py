"""VscodeConfig: immutable, never shares or mutates a default (Flyte's add_extensions bug)."""

from __future__ import annotations

import dataclasses
import platform

import pytest

from loom.interactive._config import (
    EXTENSION_PRESETS,
    JUPYTER_EXTENSION,
    PYTHON_EXTENSION,
    VIM_EXTENSION,
    VscodeConfig,
    current_arch,
)

SHA = "ab" * 32


def test_defaults_are_empty_and_not_shared() -> None:
    a, b = VscodeConfig(), VscodeConfig()
    assert a.code_server_remote_paths == {} and a.code_server_dir_names == {}
    assert a.extension_remote_paths == [] and a.code_server_sha256 == {}
    assert a.extension_remote_paths is not b.extension_remote_paths
    assert a.code_server_remote_paths is not b.code_server_remote_paths


def test_add_extensions_returns_a_new_config_and_leaves_the_old_one_alone() -> None:
    base = VscodeConfig()
    one = base.add_extensions("/tmp/one.vsix")
    two = base.add_extensions(["/tmp/two.vsix", "https://example.invalid/three.vsix"])
    assert base.extension_remote_paths == []
    assert one.extension_remote_paths == ["/tmp/one.vsix"]
    assert two.extension_remote_paths == ["/tmp/two.vsix", "https://example.invalid/three.vsix"]
    # a config made afterwards still starts empty: nothing leaked into a shared default
    assert VscodeConfig().extension_remote_paths == []
    chained = one.add_extensions("/tmp/two.vsix")
    assert one.extension_remote_paths == ["/tmp/one.vsix"]
    assert chained.extension_remote_paths == ["/tmp/one.vsix", "/tmp/two.vsix"]


def test_add_extensions_keeps_the_tarball_settings() -> None:
    base = VscodeConfig(
        code_server_remote_paths={"amd64": "https://example.invalid/cs.tar.gz"},
        code_server_dir_names={"amd64": "cs"},
        code_server_sha256={"amd64": SHA.upper()},
    )
    more = base.add_extensions("vim")
    assert more.code_server_remote_paths == base.code_server_remote_paths
    assert more.code_server_dir_names == {"amd64": "cs"}
    assert more.code_server_sha256 == {"amd64": SHA}  # normalized to lower case
    assert more.extension_remote_paths == [VIM_EXTENSION]


def test_presets_by_name() -> None:
    config = VscodeConfig().add_extensions(["python", "jupyter", "/tmp/mine.vsix"])
    assert config.extension_remote_paths == [PYTHON_EXTENSION, JUPYTER_EXTENSION, "/tmp/mine.vsix"]
    assert VscodeConfig(extension_remote_paths=["python"]).extension_remote_paths == [
        PYTHON_EXTENSION
    ]
    assert PYTHON_EXTENSION.endswith("ms-python.python-2023.20.0.vsix")
    # presets are tuples: nobody can change one for everybody else
    assert all(isinstance(v, tuple) for v in EXTENSION_PRESETS.values())
    with pytest.raises(AttributeError):
        EXTENSION_PRESETS["python"].append("x")  # type: ignore[attr-defined]


def test_duplicates_are_not_repeated() -> None:
    config = VscodeConfig(extension_remote_paths=["/a.vsix"]).add_extensions(["/a.vsix", "/b.vsix"])
    assert config.extension_remote_paths == ["/a.vsix", "/b.vsix"]


def test_the_callers_collections_are_copied() -> None:
    paths = {"amd64": "https://example.invalid/cs.tar.gz"}
    extensions = ["/a.vsix"]
    config = VscodeConfig(code_server_remote_paths=paths, extension_remote_paths=extensions)
    paths["arm64"] = "https://example.invalid/other.tar.gz"
    extensions.append("/b.vsix")
    assert config.code_server_remote_paths == {"amd64": "https://example.invalid/cs.tar.gz"}
    assert config.extension_remote_paths == ["/a.vsix"]
    # and mutating one config's list does not reach a config derived from it earlier
    derived = config.add_extensions("/c.vsix")
    config.extension_remote_paths.append("/d.vsix")
    assert derived.extension_remote_paths == ["/a.vsix", "/c.vsix"]


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        VscodeConfig().extension_remote_paths = ["/x.vsix"]  # type: ignore[misc]


def test_architecture_aliases_and_lookup() -> None:
    config = VscodeConfig(code_server_remote_paths={"x86_64": "u1", "aarch64": "u2"})
    assert config.code_server_remote_paths == {"amd64": "u1", "arm64": "u2"}
    assert config.tarball_for("amd64") == "u1"
    assert VscodeConfig().tarball_for() is None


@pytest.mark.parametrize(("machine", "arch"), [("x86_64", "amd64"), ("aarch64", "arm64")])
def test_current_arch(monkeypatch: pytest.MonkeyPatch, machine: str, arch: str) -> None:
    monkeypatch.setattr(platform, "machine", lambda: machine)
    assert current_arch() == arch


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"code_server_sha256": {"amd64": "abc"}}, "64 hexadecimal digits"),
        ({"code_server_dir_names": {"amd64": "cs"}}, "code_server_remote_paths does not list"),
        ({"extension_remote_paths": "/a.vsix"}, "not one string"),
        ({"extension_remote_paths": ["/a.vsix", ""]}, "non-empty string"),
        ({"code_server_remote_paths": {"amd64": 3}}, "must map an architecture"),
    ],
)
def test_invalid_configs_are_refused(kwargs: dict, message: str) -> None:
    if "code_server_sha256" in kwargs:
        kwargs["code_server_remote_paths"] = {"amd64": "https://example.invalid/cs.tar.gz"}
    with pytest.raises(ValueError, match=message):
        VscodeConfig(**kwargs)


def test_add_extensions_refuses_empty_names() -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        VscodeConfig().add_extensions(["  "])
