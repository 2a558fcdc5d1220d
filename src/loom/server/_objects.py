"""The object store: bundles, inputs, outputs and logs, by key.

Two implementations behind one small protocol: a local directory (the embedded default) and an
S3-compatible bucket (``LOOM_OBJECT_STORE=s3://bucket/prefix``). Keys are server-made, slash
separated and never contain ``..``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ._errors import ConfigurationError, NotFoundError
from ._settings import ServerSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_CHUNK = 1 << 20
_KEY = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


class ObjectStore(Protocol):
    """Immutable blobs by key. Writes of one key replace it whole (readers never see halves)."""

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key``."""

    def put_content(self, key: str, data: bytes) -> None:
        """Store ``data`` at a key derived from it (a digest): the object never changes, so
        one that is there already is kept. As :meth:`put_bytes`, cheaper where it can be."""

    def put_file(self, key: str, path: Path, *, move: bool = False) -> None:
        """Store the file at ``path``; with ``move`` the file may be consumed."""

    def get_bytes(self, key: str) -> bytes:
        """The object's bytes; :class:`NotFoundError` if there is none."""

    def iter_bytes(self, key: str, start: int = 0) -> Iterator[bytes]:
        """The object's bytes from ``start``, in chunks."""

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds an object."""

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""

    def local_path(self, key: str) -> Path | None:
        """A file holding the object, when the store is local (for zero-copy serving)."""


def check_key(key: str) -> str:
    """``key`` if it is a safe object key, else ``ValueError`` (keys are server-made)."""
    if not _KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"invalid object key {key!r}")
    return key


class LocalObjectStore:
    """Objects as files under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        # directories made so far: every action writes a few objects under its own, and
        # asking the file system again each time costs more than the write
        self._made: set[str] = set()
        self._temp_names = itertools.count()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        # plain strings and os calls: this runs for every action's inputs and outputs
        path = os.path.join(self.root, check_key(key))
        parent = os.path.dirname(path)
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            if len(self._made) > 100_000:
                self._made.clear()
            self._made.add(parent)
        # unique per process and call (O_EXCL refuses a leftover of a crashed predecessor)
        tmp = os.path.join(parent, f".tmp-{os.getpid()}-{next(self._temp_names)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileNotFoundError:  # the directory went away (a cleanup): make it again
            self._made.discard(parent)
            os.makedirs(parent, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)  # atomic: a reader sees the old object or the new one
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def put_content(self, key: str, data: bytes) -> None:
        # written in place, without a temp file and a rename (half the cost: every action's
        # inputs and outputs come this way). Nobody reads the key before this returns (the
        # row that names it commits after), and a file left short by a crash has the wrong
        # size, so the next write of the same content replaces it.
        path = os.path.join(self.root, check_key(key))
        parent = os.path.dirname(path)
        if parent not in self._made:
            self.put_bytes(key, data)  # (makes the directory)
            return
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if os.stat(path).st_size != len(data):
                self.put_bytes(key, data)
            return
        except FileNotFoundError:  # the directory went away
            self.put_bytes(key, data)
            return
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise

    def put_file(self, key: str, path: Path, *, move: bool = False) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if move:
            try:
                os.replace(path, dest)
                return
            except OSError:  # another file system: copy instead
                pass
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"object {key} not found") from None

    def iter_bytes(self, key: str, start: int = 0) -> Iterator[bytes]:
        try:
            f = self._path(key).open("rb")
        except FileNotFoundError:
            raise NotFoundError(f"object {key} not found") from None
        with f:
            f.seek(start)
            while chunk := f.read(_CHUNK):
                yield chunk

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None


class S3ObjectStore:
    """Objects in an S3-compatible bucket, under an optional prefix."""

    def __init__(
        self, bucket: str, prefix: str = "", *, endpoint_url: str | None, region: str | None
    ) -> None:
        import boto3  # only servers that use S3 pay for importing boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._client: S3Client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def check(self) -> None:
        """Fail early, with a clear message, if the bucket cannot be reached."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except Exception as e:
            raise ConfigurationError(
                f"cannot use object store s3://{self.bucket}/{self.prefix}: {e}"
            ) from e

    def put_bytes(self, key: str, data: bytes) -> None:
        self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_content(self, key: str, data: bytes) -> None:
        self.put_bytes(key, data)  # (a PUT is whole already)

    def put_file(self, key: str, path: Path, *, move: bool = False) -> None:
        self._client.upload_file(str(path), self.bucket, self._key(key))
        if move:
            path.unlink(missing_ok=True)

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.iter_bytes(key))

    def iter_bytes(self, key: str, start: int = 0) -> Iterator[bytes]:
        from botocore.exceptions import ClientError

        try:
            if start:
                response = self._client.get_object(
                    Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-"
                )
            else:
                response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise NotFoundError(f"object {key} not found") from None
            if code == "InvalidRange":  # start is at the end: nothing more
                return
            raise
        body = response["Body"]
        try:
            yield from body.iter_chunks(_CHUNK)
        finally:
            body.close()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def local_path(self, key: str) -> Path | None:
        return None


def open_object_store(settings: ServerSettings) -> ObjectStore:
    """The store ``settings.object_store`` names: ``s3://bucket/prefix`` or a directory."""
    spec = settings.object_store
    if spec.startswith("s3://"):
        bucket, _, prefix = spec[len("s3://") :].partition("/")
        if not bucket:
            raise ConfigurationError(f"LOOM_OBJECT_STORE={spec!r} names no bucket")
        store = S3ObjectStore(
            bucket, prefix, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
        )
        store.check()
        return store
    if "://" in spec and not spec.startswith("file://"):
        raise ConfigurationError(
            f"LOOM_OBJECT_STORE={spec!r} is not supported; use s3://bucket/prefix or a directory"
        )
    return LocalObjectStore(Path(spec.removeprefix("file://")).expanduser())
