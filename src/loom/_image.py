"""A declarative description of the container image a task runs in."""

from __future__ import annotations

from dataclasses import dataclass, replace


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

    @classmethod
    def from_debian_base(cls, python_version: str = "3.11", name: str | None = None) -> Image:
        """A Debian slim image with the given Python version."""
        return cls(python_version=python_version, name=name)

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
