"""Where the browser VS Code (code-server) and its extensions come from.

By default loom uses the pinned code-server it installs from npm (``loom ide install vscode``),
so nothing here needs to be set. :class:`VscodeConfig` lets a task bring its own code-server
release tarball per CPU architecture, and extra extensions (``.vsix`` files or URLs).
"""

from __future__ import annotations

import platform
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "CODE_TOGETHER_EXTENSION",
    "COPILOT_EXTENSION",
    "EXTENSION_PRESETS",
    "JUPYTER_EXTENSION",
    "PYTHON_EXTENSION",
    "VIM_EXTENSION",
    "VscodeConfig",
    "current_arch",
    "current_system",
]

_FLYTETOOLS = "https://raw.githubusercontent.com/flyteorg/flytetools/master/flytekitplugins/flyin"

PYTHON_EXTENSION = f"{_FLYTETOOLS}/ms-python.python-2023.20.0.vsix"
"""Microsoft's Python extension, at the URL Flyte documents (not reachable offline)."""
JUPYTER_EXTENSION = f"{_FLYTETOOLS}/ms-toolsai.jupyter-2023.9.100.vsix"
"""Microsoft's Jupyter extension, at the URL Flyte documents (not reachable offline)."""
VIM_EXTENSION = f"{_FLYTETOOLS}/vscodevim.vim-1.27.0.vsix"
"""Vim key bindings, at the URL Flyte documents (not reachable offline)."""
COPILOT_EXTENSION = f"{_FLYTETOOLS}/GitHub.copilot-1.138.563.vsix"
"""GitHub Copilot, at the URL Flyte documents (not reachable offline)."""
CODE_TOGETHER_EXTENSION = f"{_FLYTETOOLS}/genuitecllc.codetogether-2023.2.0.vsix"
"""CodeTogether, at the URL Flyte documents (not reachable offline)."""

EXTENSION_PRESETS: Mapping[str, tuple[str, ...]] = {
    "python": (PYTHON_EXTENSION,),
    "jupyter": (JUPYTER_EXTENSION,),
    "vim": (VIM_EXTENSION,),
    "copilot": (COPILOT_EXTENSION,),
    "codetogether": (CODE_TOGETHER_EXTENSION,),
}
"""Named sets of extensions that :meth:`VscodeConfig.add_extensions` accepts in place of URLs.

Read-only: the values are tuples, so no caller can change a preset for everybody else.
"""

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "x64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv8": "arm64",
}
_SYSTEM_ALIASES = {
    "linux": "linux",
    "macos": "macos",
    "darwin": "macos",
    "osx": "macos",
}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def current_arch() -> str:
    """This machine's CPU architecture in the names used as keys here (``amd64``, ``arm64``)."""
    machine = platform.machine().lower()
    return _ARCH_ALIASES.get(machine, machine)


@dataclass(eq=True)
class VscodeConfig:
    """Where code-server and its extensions come from, for one interactive task.

    :meth:`add_extensions` changes this config in place (and returns it, for chaining), as the
    seeds' ``config.add_extensions(COPILOT_EXTENSION)`` expects. Every collection given to the
    constructor is copied, so changing the dict or list you passed in later does not change the
    config, and no two configs ever share a list: adding to one never adds to another, nor to a
    config made later.

    Attributes:
        code_server_remote_paths: platform to the URL or local path of a code-server release
            tarball (``.tar.gz``). A platform is a CPU architecture (``"amd64"``, ``"arm64"``,
            or ``"x86_64"``, ``"x64"``, ``"aarch64"``), optionally after an operating system as
            code-server's release names spell it (``"linux-x64"``, ``"linux-amd64"``,
            ``"linux-arm64"``, ``"macos-arm64"``); keys are stored in that normalized form
            (``"linux-x64"`` becomes ``"linux-amd64"``). The session downloads, checks, unpacks
            and caches the tarball for the machine it runs on (under ``Settings.ide_dir``) the
            first time it needs it. Empty (the default): use the pinned code-server installed by
            ``loom ide install vscode``.
        code_server_dir_names: platform to the name of the top directory inside that tarball.
            When missing, the tarball's single top directory is used.
        extension_remote_paths: extensions to install into each session: URLs or local paths of
            ``.vsix`` files, or names from :data:`EXTENSION_PRESETS` (replaced by their URLs).
            Installing by marketplace id is not supported (the marketplace is not reachable
            offline).
        code_server_sha256: platform to the expected SHA-256 (hex) of that tarball; the
            download is refused when it does not match.

    Raises:
        ValueError: a platform key is not one of the forms above, or the values are malformed.
    """

    code_server_remote_paths: dict[str, str] = field(default_factory=dict)
    code_server_dir_names: dict[str, str] = field(default_factory=dict)
    extension_remote_paths: list[str] = field(default_factory=list)
    code_server_sha256: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Copy every collection: a caller's dict or list (or a module-level default) is never
        # shared with, or changed through, this config.
        for name in ("code_server_remote_paths", "code_server_dir_names"):
            setattr(self, name, _str_map(getattr(self, name), name))
        self.extension_remote_paths = _extension_list(self.extension_remote_paths)
        sha = _str_map(self.code_server_sha256, "code_server_sha256")
        for key, digest in sha.items():
            if not _SHA256.match(digest.lower()):
                raise ValueError(
                    f"code_server_sha256[{key!r}] must be 64 hexadecimal digits, got {digest!r}"
                )
        self.code_server_sha256 = {k: v.lower() for k, v in sha.items()}
        for name in ("code_server_dir_names", "code_server_sha256"):
            extra = sorted(set(getattr(self, name)) - set(self.code_server_remote_paths))
            if extra:
                raise ValueError(
                    f"{name} has platforms {extra} that code_server_remote_paths does not "
                    "list; add their tarball URLs or remove them"
                )

    def add_extensions(self, ext: str | Iterable[str]) -> VscodeConfig:
        """Append ``ext`` to this config's :attr:`extension_remote_paths`; return this config.

        ``ext`` is a URL or path of a ``.vsix`` file, a name from :data:`EXTENSION_PRESETS`
        (e.g. ``"python"``), or a list of those. Entries already present are not repeated.
        The config changes in place (``config.add_extensions(COPILOT_EXTENSION)`` on its own
        line works, as in the seeds); the return value allows chaining. Only this config's own
        list changes: no other config, and no default, sees the addition.

        Raises:
            ValueError: an entry is empty or not a string (the config is left unchanged).
        """
        items = [ext] if isinstance(ext, str) else list(ext)
        # validated as a whole before anything changes: a bad entry adds nothing
        self.extension_remote_paths = _extension_list([*self.extension_remote_paths, *items])
        return self

    def tarball_for(self, arch: str | None = None, system: str | None = None) -> str | None:
        """The code-server tarball configured for a platform (default: this machine's).

        A key naming the operating system and the architecture wins over one naming only the
        architecture (which stands for Linux, where tasks run)."""
        key = self.platform_key(arch, system)
        return None if key is None else self.code_server_remote_paths[key]

    def platform_key(self, arch: str | None = None, system: str | None = None) -> str | None:
        """Which key of :attr:`code_server_remote_paths` applies to a platform (default: this
        machine's), or ``None`` when none does."""
        arch = _ARCH_ALIASES.get((arch or current_arch()).lower(), arch or current_arch())
        system = _system(system or current_system())
        for key in (f"{system}-{arch}", arch if system == "linux" else None):
            if key is not None and key in self.code_server_remote_paths:
                return key
        return None


def current_system() -> str:
    """This machine's operating system in the names code-server releases use (``linux``,
    ``macos``)."""
    return _system(platform.system())


def _system(name: str) -> str:
    name = name.lower()
    return _SYSTEM_ALIASES.get(name, name)


def _platform_key(key: str, name: str) -> str:
    """``key`` in normalized form: ``amd64``/``arm64``, or ``<system>-<arch>``."""
    raw = key.strip().lower()
    arch = _ARCH_ALIASES.get(raw)
    if arch is not None:
        return arch
    system, _, rest = raw.partition("-")
    arch = _ARCH_ALIASES.get(rest)
    if system in _SYSTEM_ALIASES and arch is not None:
        return f"{_SYSTEM_ALIASES[system]}-{arch}"
    raise ValueError(
        f"{name} has an unknown platform key {key!r}: use a CPU architecture "
        f"({', '.join(sorted(_ARCH_ALIASES))}), optionally after an operating system "
        f"({', '.join(sorted(set(_SYSTEM_ALIASES)))}) and a dash, e.g. 'linux-x64' or 'amd64'"
    )


def _str_map(value: Mapping[str, str] | None, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must map an architecture to a string, got {value!r}")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str) or not item:
            raise ValueError(f"{name} must map an architecture to a string, got {key!r}: {item!r}")
        normalized = _platform_key(key, name)
        if normalized in out:
            raise ValueError(f"{name} names the platform {normalized!r} twice (as {key!r})")
        out[normalized] = item
    return out


def _extension_list(value: Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        raise ValueError(
            "extension_remote_paths must be a list of URLs or paths, not one string; "
            "use add_extensions() to add one"
        )
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"an extension must be a non-empty string, got {item!r}")
        for source in EXTENSION_PRESETS.get(item.strip(), (item.strip(),)):
            if source not in out:
                out.append(source)
    return out
