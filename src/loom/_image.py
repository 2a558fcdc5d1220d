"""``loom.Image``: the environment a task runs in remotely, in Flyte 2's shapes.

An image is an immutable spec built by chaining steps. Its Python side (the interpreter's
version, packages, requirement files, package indexes) becomes, on the server, a Python
environment built with uv, one per distinct spec (``loom.wire.environment_digest``), shared
by every action that uses it. ``from_base``, ``with_apt_packages`` and ``with_commands`` need a
container: a server that cannot run containers refuses such a task when it is submitted.

Everything is checked when the image is defined (an unparseable requirement, a missing
requirements file), and the files it names are read then: their content, not their path, is
what the environment is made of. Local runs ignore images: the task runs in the current
interpreter.
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import TaskDefinitionError

#: Flyte 2's name for "the default image"
AUTO_IMAGE = "auto"
_MAX_REQUIREMENTS_BYTES = 256 * 1024  # (wire.MAX_REQUIREMENTS_BYTES)


def current_python() -> str:
    """This interpreter's version, as ``"3.11"``."""
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def _python(version: str | tuple[int, ...] | None) -> str:
    """``"3.12"`` from ``"3.12"`` or Flyte 2's ``(3, 12)``; ``None``: this interpreter's."""
    if version is None:
        return current_python()
    if isinstance(version, tuple):
        return ".".join(str(part) for part in version)
    return str(version)


def _checked_requirement(text: str, where: str) -> str:
    """``text`` if it is a PEP 508 requirement; else a clear :class:`TaskDefinitionError`."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        Requirement(text)
    except InvalidRequirement as e:
        raise TaskDefinitionError(
            f"{where}: {text!r} is not a requirement ({e}); write it as pip would take it, "
            "e.g. 'pandas>=2.1' or 'cowsay==6.1'"
        ) from None
    return text


@dataclass(frozen=True, slots=True)
class RequirementsFile:
    """A requirements file as :meth:`Image.with_requirements` read it."""

    path: str  # as given, for messages
    name: str  # its file name: ``requirements.txt`` style, ``pyproject.toml``, ``uv.lock``
    content: str
    project: str | None = None  # a uv.lock's pyproject.toml


@dataclass(frozen=True, slots=True)
class Image:
    """An image spec built by chaining immutable steps.

    >>> Image.from_debian_base().with_pip_packages("pandas").with_env_vars({"MODE": "fast"})

    Local mode ignores images: the task runs in the current interpreter.
    """

    #: ``from_base``: an image to start from (needs a container); ``None``: a plain Python
    base: str | None = None
    python_version: str = field(default_factory=lambda: _python(None))
    pip_packages: tuple[str, ...] = ()
    apt_packages: tuple[str, ...] = ()
    #: the requirement files' paths, as given (their contents are in ``requirement_files``)
    requirements: tuple[str, ...] = ()
    requirement_files: tuple[RequirementsFile, ...] = ()
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    pre: bool = False
    commands: tuple[str, ...] = ()
    env_vars: tuple[tuple[str, str], ...] = ()
    name: str | None = None
    registry: str | None = None
    #: a PEP 723 script whose header (``# /// script``) declares the dependencies
    script: str | None = None

    @classmethod
    def from_debian_base(
        cls,
        python_version: str | tuple[int, int] | None = None,
        name: str | None = None,
        *,
        registry: str | None = None,
        **flyte_options: Any,
    ) -> Image:
        """A Python environment of the given version (``"3.12"`` or ``(3, 12)``; default:
        this interpreter's), as Flyte 2's Debian-based default image.

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
        index_url: str | None = None,
        extra_index_urls: str | list[str] | tuple[str, ...] | None = None,
        pre: bool = False,
        **flyte_options: Any,
    ) -> Image:
        """The image a `uv script <https://docs.astral.sh/uv/guides/scripts/>`_ declares in
        its header: its ``dependencies`` become pip packages, and ``requires-python`` the
        Python version (unless ``python_version`` is given; else this interpreter's).

        Only the file is read (no network), so it is safe at module level. Flyte 2's other
        options (``extra_args``, ``platform``, ``registry_secret``, ``secret_mounts``) are
        accepted and ignored.
        """
        path = os.fspath(script)
        header = _script_header(path)
        dependencies = header.get("dependencies", [])
        if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
            raise TaskDefinitionError(
                f"{path}: the script header's dependencies must be a list of strings"
            )
        for dependency in dependencies:
            _checked_requirement(dependency, f"{path}: the script header")
        if python_version is None:
            python_version = _python_of(str(header.get("requires-python", ""))) or None
        return cls(
            python_version=_python(python_version),
            pip_packages=tuple(dependencies),
            name=name,
            registry=registry,
            script=os.path.abspath(path),
            index_url=index_url,
            extra_index_urls=_urls(extra_index_urls),
            pre=pre,
        )

    @classmethod
    def from_base(cls, image_uri: str) -> Image:
        """Start from an existing container image (needs a server that runs containers)."""
        return cls(base=image_uri)

    @classmethod
    def from_ref_name(cls, name: str) -> Image:
        """An image known by ``name`` (Flyte 2 maps names to images with ``--image
        NAME=REF``); here an existing container image of that reference."""
        return cls(base=name, name=name)

    def clone(self, **changes: Any) -> Image:
        """A copy with some fields changed (``name=``, ``python_version=``...)."""
        if "python_version" in changes:
            changes["python_version"] = _python(changes["python_version"])
        try:
            return replace(self, **changes)
        except TypeError as e:
            raise TaskDefinitionError(f"Image.clone: {e}") from None

    def with_pip_packages(
        self,
        *packages: str,
        index_url: str | None = None,
        extra_index_urls: str | list[str] | tuple[str, ...] | None = None,
        pre: bool = False,
        **flyte_options: Any,
    ) -> Image:
        """Add pip requirement specifiers (checked now), and where to find them: ``index_url``
        instead of the default index, ``extra_index_urls`` besides it, ``pre``-releases.
        Flyte 2's ``extra_args`` and ``secret_mounts`` are accepted and ignored."""
        for package in packages:
            _checked_requirement(package, "Image.with_pip_packages")
        return replace(
            self,
            pip_packages=self.pip_packages + packages,
            index_url=index_url or self.index_url,
            extra_index_urls=self.extra_index_urls + _urls(extra_index_urls),
            pre=self.pre or pre,
        )

    def with_apt_packages(self, *packages: str, **flyte_options: Any) -> Image:
        """Add Debian packages (needs a server that runs containers)."""
        return replace(self, apt_packages=self.apt_packages + packages)

    def with_commands(self, *commands: str, **flyte_options: Any) -> Image:
        """Add build commands (needs a server that runs containers)."""
        return replace(self, commands=self.commands + commands)

    def with_requirements(self, path: str | os.PathLike[str], **flyte_options: Any) -> Image:
        """Add a requirements file: ``requirements.txt`` style, a ``pyproject.toml`` (its
        ``[project] dependencies``), or a ``uv.lock`` (with the ``pyproject.toml`` beside it:
        installed exactly as locked). It is read now; its content makes the environment."""
        file = _read_requirements(os.fspath(path))
        return replace(
            self,
            requirements=(*self.requirements, file.path),
            requirement_files=(*self.requirement_files, file),
        )

    def with_uv_project(
        self,
        pyproject_file: str | os.PathLike[str],
        uvlock: str | os.PathLike[str] | None = None,
        **flyte_options: Any,
    ) -> Image:
        """Add a uv project's locked dependencies (not the project itself): its
        ``pyproject.toml`` and ``uv.lock`` (by default the one beside it), read now.
        Flyte 2's other options are accepted and ignored."""
        pyproject = Path(os.fspath(pyproject_file))
        lock = Path(os.fspath(uvlock)) if uvlock is not None else pyproject.with_name("uv.lock")
        file = _read_lock(lock, pyproject, f"Image.with_uv_project({str(pyproject)!r})")
        return replace(
            self,
            requirements=(*self.requirements, str(lock)),
            requirement_files=(*self.requirement_files, file),
        )

    def with_env_vars(self, env_vars: dict[str, str]) -> Image:
        """Add environment variables, set in every process of the image's tasks."""
        return replace(self, env_vars=self.env_vars + tuple(env_vars.items()))


def _urls(urls: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    if urls is None:
        return ()
    return (urls,) if isinstance(urls, str) else tuple(urls)


def _read_requirements(path: str) -> RequirementsFile:
    """The file, checked: it exists, is small enough, and its requirements parse."""
    where = f"Image.with_requirements({path!r})"
    name = Path(path).name
    if name == "uv.lock":
        return _read_lock(Path(path), Path(path).with_name("pyproject.toml"), where)
    content = _read_text(Path(path), where)
    if name.endswith(".toml"):
        try:
            project = tomllib.loads(content).get("project", {})
        except tomllib.TOMLDecodeError as e:
            raise TaskDefinitionError(f"{where}: not valid TOML: {e}") from None
        dependencies = project.get("dependencies", []) if isinstance(project, dict) else []
        if not isinstance(dependencies, list):
            raise TaskDefinitionError(f"{where}: [project] dependencies must be a list")
        for dependency in dependencies:
            _checked_requirement(str(dependency), where)
    else:
        for number, raw in enumerate(content.splitlines(), 1):
            line = raw.split(" #", 1)[0].strip()
            if line and not line.startswith(("#", "-")):  # (options: -r, -e, --index-url...)
                _checked_requirement(line.split(";", 1)[0].strip(), f"{where}, line {number}")
    return RequirementsFile(path=path, name=name, content=content)


def _read_text(path: Path, where: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TaskDefinitionError(f"{where}: cannot read {path}: {e.strerror or e}") from None
    if len(data) > _MAX_REQUIREMENTS_BYTES:
        raise TaskDefinitionError(
            f"{where}: {path} is {len(data)} bytes, over the limit of {_MAX_REQUIREMENTS_BYTES}"
        )
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise TaskDefinitionError(f"{where}: {path} is not UTF-8 text") from None


def _read_lock(lock: Path, pyproject: Path, where: str) -> RequirementsFile:
    """A ``uv.lock`` and its project's ``pyproject.toml``, both checked as TOML."""
    files = {}
    for path in (lock, pyproject):
        text = _read_text(path, where)
        try:
            tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise TaskDefinitionError(f"{where}: {path} is not valid TOML: {e}") from None
        files[path] = text
    return RequirementsFile(
        path=str(lock), name="uv.lock", content=files[lock], project=files[pyproject]
    )


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
    try:
        return tomllib.loads("\n".join(lines))
    except tomllib.TOMLDecodeError as e:
        raise TaskDefinitionError(f"{path}: the script header is not valid TOML: {e}") from None


def _python_of(requires: str) -> str:
    """The Python a ``requires-python`` specifier asks for: this interpreter's if it
    satisfies it (``">=3.10"``), else the first ``X.Y`` it names (``"==3.12.*"``: 3.12)."""
    import re

    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    if not requires.strip():
        return ""
    try:
        if SpecifierSet(requires).contains(f"{current_python()}.0", prereleases=True):
            return current_python()
    except InvalidSpecifier:
        raise TaskDefinitionError(
            f"requires-python {requires!r} is not a version specifier"
        ) from None
    m = re.search(r"(\d+)\.(\d+)", requires)
    return f"{m[1]}.{m[2]}" if m else ""
