"""Bundle upload: content addressing and the safety checks that run before any extraction."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Callable

import pytest

from tests.server.conftest import Api, make_bundle


def _member(
    name: str, kind: bytes = tarfile.REGTYPE, link: str = ""
) -> Callable[[tarfile.TarFile], None]:
    def add(archive: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = link
        archive.addfile(info, io.BytesIO(b""))

    return add


def test_upload_head_get_and_idempotency(api: Api) -> None:
    digest, data = make_bundle({"pkg/flow.py": b"print('hi')\n", "README": b"r"})
    assert api.client.head(f"/api/v1/bundles/{digest}").status_code == 404
    r = api.client.put(f"/api/v1/bundles/{digest}", content=data)
    assert r.status_code == 200 and r.json() == {"digest": digest, "size": len(data)}
    assert api.client.put(f"/api/v1/bundles/{digest}", content=data).status_code == 200
    head = api.client.head(f"/api/v1/bundles/{digest}")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
    assert api.client.get(f"/api/v1/bundles/{digest}").content == data
    bare = digest.removeprefix("sha256:")  # the bare hex names the same bundle
    assert api.client.get(f"/api/v1/bundles/{bare}").content == data
    assert api.client.get(f"/api/v1/bundles/sha256:{'1' * 64}").status_code == 404


def test_digest_must_match_the_body(api: Api) -> None:
    digest, data = make_bundle()
    other = "sha256:" + hashlib.sha256(b"other").hexdigest()
    r = api.client.put(f"/api/v1/bundles/{other}", content=data)
    assert r.status_code == 400 and "mismatch" in r.json()["detail"]
    r = api.client.put("/api/v1/bundles/md5:abc", content=data)
    assert r.status_code == 400 and "64 hex digits" in r.json()["detail"]


@pytest.mark.parametrize(
    "body,needle",
    [
        (b"not a tarball at all", "not a gzip-compressed tar"),
        (gzip.compress(b"gzip but not tar" * 100, mtime=0), "not a gzip-compressed tar"),
    ],
    ids=["garbage", "gzip-not-tar"],
)
def test_not_a_gzip_tar_is_rejected(api: Api, body: bytes, needle: str) -> None:
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    r = api.client.put(f"/api/v1/bundles/{digest}", content=body)
    assert r.status_code == 400 and needle in r.json()["detail"]


def test_an_uncompressed_tar_is_rejected(api: Api) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        _member("a.py")(archive)
    body = buf.getvalue()
    r = api.client.put(f"/api/v1/bundles/sha256:{hashlib.sha256(body).hexdigest()}", content=body)
    assert r.status_code == 400


@pytest.mark.parametrize(
    "add,needle",
    [
        (_member("/etc/passwd"), "'/etc/passwd' escapes"),
        (_member("../outside.py"), "'../outside.py' escapes"),
        (_member("pkg/../../outside.py"), "escapes"),
        (_member("link", tarfile.SYMTYPE, "/etc/passwd"), "points outside"),
        (_member("pkg/link", tarfile.SYMTYPE, "../../etc"), "points outside"),
        (_member("hard", tarfile.LNKTYPE, "../x"), "points outside"),
        (_member("dev", tarfile.CHRTYPE), "device or FIFO"),
        (_member("fifo", tarfile.FIFOTYPE), "device or FIFO"),
    ],
)
def test_members_escaping_the_root_are_rejected(
    api: Api, add: Callable[[tarfile.TarFile], None], needle: str
) -> None:
    digest, data = make_bundle(extra=add)
    r = api.client.put(f"/api/v1/bundles/{digest}", content=data)
    assert r.status_code == 400, r.text
    assert needle in r.json()["detail"]
    assert api.client.head(f"/api/v1/bundles/{digest}").status_code == 404


def test_links_inside_the_root_are_fine(api: Api) -> None:
    def add(archive: tarfile.TarFile) -> None:
        _member("pkg/link", tarfile.SYMTYPE, "../flow.py")(archive)
        _member("hard", tarfile.LNKTYPE, "flow.py")(archive)

    digest, data = make_bundle(extra=add)
    assert api.client.put(f"/api/v1/bundles/{digest}", content=data).status_code == 200


def test_oversized_bundles_are_413(api: Api) -> None:
    api.plane.bundles.max_bytes = 64
    digest, data = make_bundle({"big.bin": bytes(range(256)) * 64})
    r = api.client.put(f"/api/v1/bundles/{digest}", content=data)
    assert r.status_code == 413 and "LOOM_MAX_BUNDLE_BYTES" in r.json()["detail"]
