"""VscodeConfig: ``add_extensions`` changes the config it is called on, as the seeds use it, and
never another config or a shared default (Flyte's add_extensions bug); the seeds' platform keys."""

from __future__ import annotations

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


def test_add_extensions_changes_the_config_in_place_as_the_seeds_use_it() -> None:
    # seed 001: `config = VscodeConfig(); config.add_extensions(COPILOT_EXTENSION)`, return
    # value ignored: the config itself must now hold the extension
    from loom.interactive import COPILOT_EXTENSION

    config = VscodeConfig()
    config.add_extensions(COPILOT_EXTENSION)
    config.add_extensions("https://open-vsx.org/api/vscodevim/vim/1.27.0/file/vim.vsix")
    assert config.extension_remote_paths == [
        COPILOT_EXTENSION,
        "https://open-vsx.org/api/vscodevim/vim/1.27.0/file/vim.vsix",
    ]
    # and it returns the config, for chaining
    assert config.add_extensions("/tmp/a.vsix").add_extensions(["/tmp/b.vsix"]) is config
    assert config.extension_remote_paths[-2:] == ["/tmp/a.vsix", "/tmp/b.vsix"]


def test_add_extensions_never_reaches_another_config_or_a_default() -> None:
    a, b = VscodeConfig(), VscodeConfig()
    a.add_extensions("/tmp/one.vsix")
    assert b.extension_remote_paths == []
    assert VscodeConfig().extension_remote_paths == []  # no shared default list
    shared = ["/tmp/base.vsix"]
    c, d = VscodeConfig(extension_remote_paths=shared), VscodeConfig(extension_remote_paths=shared)
    c.add_extensions("/tmp/two.vsix")
    assert shared == ["/tmp/base.vsix"] and d.extension_remote_paths == ["/tmp/base.vsix"]
    # the decorator's default config is a fresh one per task, too
    import loom
    from loom.interactive import vscode
    from loom.interactive._decorators import interactive_of

    env = loom.TaskEnvironment("cfg")
    first = vscode(env.task(lambda: None))  # type: ignore[arg-type]
    second = vscode(env.task(lambda: None))  # type: ignore[arg-type]
    one, two = interactive_of(first), interactive_of(second)
    assert one is not None and two is not None and one.config is not None
    one.config.add_extensions("/tmp/x.vsix")
    assert two.config is not None and two.config.extension_remote_paths == []


def test_a_bad_extension_changes_nothing() -> None:
    config = VscodeConfig(extension_remote_paths=["/tmp/a.vsix"])
    with pytest.raises(ValueError, match="non-empty string"):
        config.add_extensions(["/tmp/b.vsix", ""])
    assert config.extension_remote_paths == ["/tmp/a.vsix"]


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
    # and a config made from another's collections does not share them
    copy = VscodeConfig(extension_remote_paths=config.extension_remote_paths)
    config.add_extensions("/c.vsix")
    assert copy.extension_remote_paths == ["/a.vsix"]


def test_architecture_aliases_and_lookup() -> None:
    config = VscodeConfig(code_server_remote_paths={"x86_64": "u1", "aarch64": "u2"})
    assert config.code_server_remote_paths == {"amd64": "u1", "arm64": "u2"}
    assert config.tarball_for("amd64") == "u1"
    assert VscodeConfig().tarball_for() is None


@pytest.mark.parametrize(
    ("key", "normalized"),
    [
        ("linux-x64", "linux-amd64"),  # the seeds' key
        ("linux-amd64", "linux-amd64"),  # code-server's release names
        ("linux-arm64", "linux-arm64"),
        ("linux-aarch64", "linux-arm64"),
        ("Linux-X86_64", "linux-amd64"),
        ("darwin-arm64", "macos-arm64"),
        ("amd64", "amd64"),  # flytekit's own keys
        ("x64", "amd64"),
    ],
)
def test_the_seeds_platform_keys(key: str, normalized: str) -> None:
    config = VscodeConfig(
        code_server_remote_paths={key: "https://example.invalid/cs.tar.gz"},
        code_server_dir_names={key: "cs"},
        code_server_sha256={key: SHA},
    )
    assert config.code_server_remote_paths == {normalized: "https://example.invalid/cs.tar.gz"}
    assert config.code_server_dir_names == {normalized: "cs"}
    arch = normalized.rsplit("-", 1)[-1]
    system = normalized.split("-", maxsplit=1)[0] if "-" in normalized else "linux"
    assert config.tarball_for(arch, system) == "https://example.invalid/cs.tar.gz"
    other = "arm64" if arch == "amd64" else "amd64"
    assert config.tarball_for(other, system) is None


def test_the_seeds_key_matches_this_linux_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    config = VscodeConfig(code_server_remote_paths={"linux-x64": "https://example.invalid/a"})
    assert config.tarball_for() == "https://example.invalid/a"
    assert config.platform_key() == "linux-amd64"
    # an OS-qualified key wins over a bare architecture; a bare one stands for Linux
    both = VscodeConfig(code_server_remote_paths={"amd64": "bare", "linux-x64": "qualified"})
    assert both.tarball_for() == "qualified"
    assert VscodeConfig(code_server_remote_paths={"amd64": "bare"}).tarball_for() == "bare"
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert VscodeConfig(code_server_remote_paths={"amd64": "bare"}).tarball_for() is None
    assert both.tarball_for() is None


@pytest.mark.parametrize("key", ["windows-x64", "linux", "x86", "linux-x64-musl", ""])
def test_an_unknown_platform_key_is_a_clear_error(key: str) -> None:
    with pytest.raises(ValueError, match=f"unknown platform key {key!r}.*'linux-x64'"):
        VscodeConfig(code_server_remote_paths={key: "https://example.invalid/cs.tar.gz"})


def test_a_platform_named_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        VscodeConfig(code_server_remote_paths={"x64": "a", "amd64": "b"})


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
