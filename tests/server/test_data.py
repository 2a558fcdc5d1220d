"""Data endpoints: the content-addressed objects remote File/Dir/DataFrame values refer to, and
the UI's download of them."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from loom import wire
from loom.server._data import DataService, parse_data_uri
from loom.server._objects import S3ObjectStore
from tests.server.conftest import Api


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_upload_head_get_and_idempotency(api: Api) -> None:
    data = b"col\n" + bytes(range(256)) * 100
    hexdigest = digest_of(data)
    url = f"/api/v1/data/sha256:{hexdigest}"
    assert api.client.head(url).status_code == 404
    r = api.client.put(url, content=data)
    assert r.status_code == 200, r.text
    assert r.json() == {"digest": f"sha256:{hexdigest}", "size": len(data)}
    # stored once, in the object store, under the data/ prefix
    assert api.plane.store.get_bytes(f"data/{hexdigest}") == data
    again = api.client.put(f"/api/v1/data/{hexdigest}", content=data)  # the bare hex too
    assert again.status_code == 200 and again.json()["size"] == len(data)
    head = api.client.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
    assert api.client.get(url).content == data
    assert api.client.get(f"/api/v1/data/{hexdigest.upper()}").content == data
    assert list(api.plane.tmp_dir.iterdir()) == []  # no upload left behind


def test_an_empty_object_is_fine(api: Api) -> None:
    hexdigest = digest_of(b"")
    assert api.client.put(f"/api/v1/data/{hexdigest}", content=b"").status_code == 200
    assert api.client.get(f"/api/v1/data/{hexdigest}").content == b""


def test_the_digest_must_match_the_body(api: Api) -> None:
    r = api.client.put(f"/api/v1/data/{digest_of(b'other')}", content=b"data")
    assert r.status_code == 400 and "digest mismatch" in r.json()["detail"]
    assert api.client.head(f"/api/v1/data/{digest_of(b'other')}").status_code == 404
    assert api.client.head(f"/api/v1/data/{digest_of(b'data')}").status_code == 404
    for bad in ("md5:abc", "sha256:" + "z" * 64, "a" * 63):
        r = api.client.put(f"/api/v1/data/{bad}", content=b"data")
        assert r.status_code == 400 and "64 hex digits" in r.json()["detail"], bad
        assert api.client.get(f"/api/v1/data/{bad}").status_code == 400
    assert list(api.plane.tmp_dir.iterdir()) == []


def test_data_over_the_limit_is_413(api: Api) -> None:
    api.plane.data.max_bytes = 64
    data = b"x" * 65
    r = api.client.put(f"/api/v1/data/{digest_of(data)}", content=data)
    assert r.status_code == 413 and "LOOM_MAX_DATA_BYTES" in r.json()["detail"]
    assert api.client.head(f"/api/v1/data/{digest_of(data)}").status_code == 404
    assert list(api.plane.tmp_dir.iterdir()) == []
    exact = b"y" * 64
    assert api.client.put(f"/api/v1/data/{digest_of(exact)}", content=exact).status_code == 200


def test_unknown_data_is_404(api: Api) -> None:
    missing = digest_of(b"never uploaded")
    assert api.client.head(f"/api/v1/data/{missing}").status_code == 404
    r = api.client.get(f"/api/v1/data/{missing}")
    assert r.status_code == 404 and "not found" in r.json()["detail"]


def test_every_data_endpoint_needs_a_key(api: Api) -> None:
    data = b"secret data"
    url = f"/api/v1/data/{digest_of(data)}"
    assert api.anon.put(url, content=data).status_code == 401
    assert api.client.put(url, content=data).status_code == 200
    assert api.anon.head(url).status_code == 401
    r = api.anon.get(url)
    assert r.status_code == 401 and data not in r.content
    wrong = {"Authorization": "Bearer not-a-key"}
    assert api.anon.get(url, headers=wrong).status_code == 401


def test_the_data_service_streams_from_a_store_that_is_not_local(
    moto_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    store = S3ObjectStore(s3_bucket, "loom", endpoint_url=moto_endpoint, region=None)
    service = DataService(store, max_bytes=1 << 20)
    data = b"through s3" * 1000
    hexdigest = digest_of(data)
    upload = tmp_path / "upload"
    upload.write_bytes(data)
    info = service.put(hexdigest, upload, len(data), hexdigest)
    assert info == wire.DataInfo(digest=hexdigest, size=len(data))
    assert service.size(hexdigest) is None  # exists, size not known cheaply
    local, chunks = service.source(f"sha256:{hexdigest}")
    assert local is None and chunks is not None and b"".join(chunks) == data
    from loom.server._errors import NotFoundError

    with pytest.raises(NotFoundError):
        service.source(digest_of(b"missing"))
    with pytest.raises(NotFoundError):
        service.size(digest_of(b"missing"))


def test_data_uris_are_parsed_strictly() -> None:
    d = "ab" * 32
    assert parse_data_uri(f"loom://data/{d}/report.txt") is not None
    ref = parse_data_uri(f"loom://data/{d}/tree/")
    assert ref is not None and ref.tree and ref.name == "tree"
    for bad in (
        f"loom://data/{d}/",
        f"loom://data/{d}/a/b",
        f"loom://data/{d}/..",
        f"loom://data/{d[:-1]}/x",
        f"loom://data/{'Z' * 64}/x",
        "/etc/passwd",
        f"s3://data/{d}/x",
    ):
        assert parse_data_uri(bad) is None, bad


# -- the UI's download of what an action refers to ----------------------------------------


def _targz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_the_ui_serves_referenced_data_from_the_object_store_and_nothing_else(api: Api) -> None:
    content = b"a,b\n1,2\n"
    tree = _targz({"one.txt": b"1"})
    unreferenced = b"not referred to by the action"
    for data in (content, tree, unreferenced):
        assert api.client.put(f"/api/v1/data/{digest_of(data)}", content=data).status_code == 200
    file_ref = f"loom://data/{digest_of(content)}/in put.csv"
    dir_ref = f"loom://data/{digest_of(tree)}/results/"
    gone_ref = f"loom://data/{digest_of(b'never stored')}/gone.txt"
    inputs = {
        "data": {"__loom__": "file", "path": file_ref, "name": "in put.csv"},
        "tree": {"__loom__": "dir", "path": dir_ref, "name": "results"},
        "gone": {"__loom__": "file", "path": gone_ref, "name": None},
    }
    run = str(api.create_run(inputs=inputs)["name"])
    url = f"/api/v1/runs/{run}/actions/a0/files"
    r = api.client.get(url, params={"of": "inputs", "path": file_ref})
    assert r.status_code == 200 and r.content == content
    assert r.headers["content-disposition"] == "attachment; filename*=utf-8''in%20put.csv"
    assert r.headers["x-content-type-options"] == "nosniff"
    r = api.client.get(url, params={"of": "inputs", "path": dir_ref})
    assert r.status_code == 200 and r.content == tree
    assert r.headers["content-disposition"] == 'attachment; filename="results.tar.gz"'
    assert r.headers["content-type"] == "application/gzip"
    # only what the values name: not other stored data, however it is spelled
    for path in (
        f"loom://data/{digest_of(unreferenced)}/in put.csv",
        f"loom://data/{digest_of(content)}/other.csv",
        file_ref + "/",
    ):
        r = api.client.get(url, params={"of": "inputs", "path": path})
        assert r.status_code == 404 and "refer to no file" in r.json()["detail"]
    r = api.client.get(url, params={"of": "inputs", "path": gone_ref})
    assert r.status_code == 404 and "not found" in r.json()["detail"]
    # outputs too, once there are some
    api.job(run, "a0", 1)
    api.finish(run, "a0", 1, value=[{"__loom__": "file", "path": file_ref, "name": "in put.csv"}])
    r = api.client.get(url, params={"of": "outputs", "path": file_ref})
    assert r.status_code == 200 and r.content == content
    assert api.anon.get(url, params={"of": "outputs", "path": file_ref}).status_code == 401


def test_data_belongs_to_the_projects_it_was_uploaded_in(api: Api) -> None:
    for project in ("a", "b"):
        assert api.client.post("/api/v1/projects", json={"name": project}).status_code == 201
    keys = {}
    for name, grants in (("in-a", {"a": "member"}), ("in-b", {"b": "member"})):
        r = api.client.post("/api/v1/api-keys", json={"name": name, "projects": grants})
        keys[name] = {"Authorization": f"Bearer {r.json()['key']}"}
    secret = b"project a's data"
    url = f"/api/v1/data/{digest_of(secret)}"
    r = api.anon.put(url, params={"project": "a"}, content=secret, headers=keys["in-a"])
    assert r.status_code == 200, r.text
    assert api.anon.get(url, headers=keys["in-a"]).content == secret
    # knowing the digest is not enough: b has no such data, and cannot upload into a
    assert api.anon.get(url, headers=keys["in-b"]).status_code == 404
    assert api.anon.head(url, params={"project": "b"}, headers=keys["in-b"]).status_code == 404
    r = api.anon.put(url, params={"project": "a"}, content=secret, headers=keys["in-b"])
    assert r.status_code == 404
    # nor does naming it in a run of b's serve it through the UI
    run = api.create_run(
        project="b",
        inputs={"f": {"__loom__": "file", "path": f"loom://data/{digest_of(secret)}/x"}},
    )["name"]
    files = f"/api/v1/runs/{run}/actions/a0/files"
    path = f"loom://data/{digest_of(secret)}/x"
    r = api.client.get(files, params={"of": "inputs", "path": path})
    assert r.status_code == 404 and "not found in this run's project" in r.json()["detail"]
    # b's own copy of the same bytes is b's to read
    r = api.anon.put(url, params={"project": "b"}, content=secret, headers=keys["in-b"])
    assert r.status_code == 200
    assert api.anon.get(url, headers=keys["in-b"]).content == secret
    assert api.client.get(files, params={"of": "inputs", "path": path}).content == secret
