"""A declarative description of the container image a task runs in."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from .errors import TaskDefinitionError


def _python(version: str | tuple[int, ...] | None) -> str:
    """``"3.12"`` from ``"3.12"`` or Flyte 2's ``(3, 12)``; ``None``: this interpreter's."""
    if version is None:
        import sys

        return f"{sys.version_info[0]}.{sys.version_info[1]}"
    if isinstance(version, tuple):
        return ".".join(str(part) for part in version)
    return str(version)


@dataclass(frozen=True, slots=True)
class Image:
    """An image spec built by chaining immutable steps.

    >>> Image.from_debian_base().with_pip_packages("pandas").with_apt_packages("ffmpeg")

    Local mode ignores images: the task runs in the current interpreter.
    """

    base: str = "debian:bookworm-slim"
    python_version: str = "3.11"
    pip_packages: tuple[str, ...] = ()
    apt_packages: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    env_vars: tuple[tuple[str, str], ...] = ()
    name: str | None = None
    registry: str | None = None
    #: a PEP 723 script whose header (``# /// script``) declares the dependencies
    script: str | None = None

    @classmethod
    def from_debian_base(
        cls,
        python_version: str | tuple[int, int] = "3.11",
        name: str | None = None,
        *,
        registry: str | None = None,
        **flyte_options: Any,
    ) -> Image:
        """A Debian slim image with the given Python version (``"3.12"`` or ``(3, 12)``).

        Flyte 2's other options (``flyte_version``, ``install_flyte``, ``registry_secret``,
        ``platform``) are accepted and ignored.
        """
        return cls(python_version=_python(python_version), name=name, registry=registry)

    @classmethod
    def from_uv_script(
        cls,
        script: str | os.PathLike[str],
        *,
        name: str,
        registry: str | None = None,
        python_version: str | tuple[int, int] | None = None,
        **flyte_options: Any,
    ) -> Image:
        """The image a `uv script <https://docs.astral.sh/uv/guides/scripts/>`_ declares in
        its header: its ``dependencies`` become pip packages, and ``requires-python`` the
        Python version (unless ``python_version`` is given; else this interpreter's).

        Only the file is read (no network), so it is safe at module level. Flyte 2's other
        options (``index_url``, ``extra_index_urls``, ``pre``, ``extra_args``, ``platform``,
        ``registry_secret``, ``secret_mounts``) are accepted and ignored.
        """
        path = os.fspath(script)
        header = _script_header(path)
        dependencies = header.get("dependencies", [])
        if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
            raise TaskDefinitionError(
                f"{path}: the script header's dependencies must be a list of strings"
            )
        if python_version is None:
            python_version = _python_of(str(header.get("requires-python", ""))) or None
        return cls(
            python_version=_python(python_version),
            pip_packages=tuple(dependencies),
            name=name,
            registry=registry,
            script=os.path.abspath(path),
        )

    @classmethod
    def from_base(cls, image_uri: str) -> Image:
        """Start from an existing image reference."""
        return cls(base=image_uri)

    def with_pip_packages(self, *packages: str) -> Image:
        """Add pip requirement specifiers."""
        return replace(self, pip_packages=self.pip_packages + packages)

    def with_apt_packages(self, *packages: str) -> Image:
        """Add Debian packages."""
        return replace(self, apt_packages=self.apt_packages + packages)

    def with_requirements(self, path: str) -> Image:
        """Add a pip requirements file."""
        return replace(self, requirements=(*self.requirements, str(path)))

    def with_env_vars(self, env_vars: dict[str, str]) -> Image:
        """Add environment variables baked into the image."""
        return replace(self, env_vars=self.env_vars + tuple(env_vars.items()))


def _script_header(path: str) -> dict[str, Any]:
    """The TOML of a PEP 723 ``# /// script`` block (empty if the script has none)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise TaskDefinitionError(f"Image.from_uv_script: cannot read {path}: {e}") from None
    lines: list[str] | None = None
    for line in text.splitlines():
        if lines is None:
            if line.rstrip() == "# /// script":
                lines = []
        elif line.rstrip() == "# ///":
            break
        elif line.startswith("#"):
            lines.append(line[2:] if line.startswith("# ") else line[1:])
        else:
            raise TaskDefinitionError(
                f"{path}: the '# /// script' block must end with '# ///' before any line "
                "that is not a comment"
            )
    else:
        if lines is not None:
            raise TaskDefinitionError(f"{path}: the '# /// script' block has no closing '# ///'")
    if not lines:
        return {}
    import tomllib

    try:
        return tomllib.loads("\n".join(lines))
    except tomllib.TOMLDecodeError as e:
        raise TaskDefinitionError(f"{path}: the script header is not valid TOML: {e}") from None


def _python_of(requires: str) -> str:
    """The first ``X.Y`` in a ``requires-python`` specifier (``">=3.12"`` -> ``"3.12"``)."""
    import re

    m = re.search(r"(\d+)\.(\d+)", requires)
    return f"{m[1]}.{m[2]}" if m else ""
