"""Checkpoints on the server: an attempt saves, the action's next attempt (and only it) loads
the latest an earlier attempt saved; over the limit is a clear 413."""

from __future__ import annotations

import hashlib

import pytest

from loom import wire

from .conftest import Api, error_info, task_spec

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _path(run: str, attempt: int, action: str = "a0") -> str:
    return f"/api/v1/runs/{run}/actions/{action}/attempts/{attempt}/checkpoint"


def _as(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def _fail(api: Api, run: str, attempt: int) -> str:
    """End the attempt with a user error and return the next attempt's credential."""
    r = api.finish(run, "a0", attempt, error=error_info())
    assert r.status_code == 200, r.text
    return api.job(run, "a0", attempt + 1).credential


def test_the_next_attempt_loads_the_latest_earlier_save(api: Api) -> None:
    run = api.create_run(task_spec(retries={"count": 3, "backoff_s": 0}))["name"]
    first = api.job(run, "a0", 1).credential
    r = api.anon.get(_path(run, 1), headers=_as(first))
    assert r.status_code == 404 and "saved a checkpoint" in r.text  # attempt 1: nothing
    for data in (b"step 1", b"step 2"):  # the later save replaces the earlier
        r = api.anon.put(_path(run, 1), content=data, headers=_as(first))
        assert r.status_code == 200, r.text
    info = wire.CheckpointInfo.model_validate_json(r.content)
    assert (info.attempt, info.kind, info.size) == (1, wire.CheckpointKind.FILE, 6)
    assert info.sha256 == hashlib.sha256(b"step 2").hexdigest()

    second = _fail(api, run, 1)
    r = api.anon.get(_path(run, 2), headers=_as(second))
    assert r.status_code == 200 and r.content == b"step 2"
    assert wire.CheckpointInfo.model_validate_json(r.headers[wire.CHECKPOINT_HEADER]) == info
    # attempt 2 saves a directory's archive; it still resumes from attempt 1's
    r = api.anon.put(_path(run, 2), params={"kind": "dir"}, content=b"tgz", headers=_as(second))
    assert r.status_code == 200 and r.json()["kind"] == "dir"
    assert api.anon.get(_path(run, 2), headers=_as(second)).content == b"step 2"
    # the first attempt's credential died with it
    assert api.anon.get(_path(run, 2), headers=_as(first)).status_code == 401

    third = _fail(api, run, 2)
    r = api.anon.get(_path(run, 3) + "/info", headers=_as(third))
    assert r.json()["attempt"] == 2 and r.json()["kind"] == "dir"
    # an attempt that saves nothing passes the earlier checkpoint on
    fourth = _fail(api, run, 3)
    assert api.anon.get(_path(run, 4), headers=_as(fourth)).content == b"tgz"
    # superseded saves are gone from the object store: only the last two attempts' are kept
    keys = list((api.settings.data_dir).rglob("checkpoints/*/*"))
    assert len([k for k in keys if k.name != "index.json"]) == 2


def test_an_attempt_reaches_only_its_own_actions_checkpoint(api: Api) -> None:
    run = api.create_run(task_spec())["name"]
    api.create_child(run, "child", task=task_spec(retries={"count": 1, "backoff_s": 0}))
    child = api.job(run, "child", 1).credential
    parent = api.job(run, "a0", 1).credential
    assert api.anon.put(_path(run, 1, "child"), content=b"c", headers=_as(child)).status_code == 200
    # the parent (same run) can neither read nor overwrite its child's checkpoint
    r = api.anon.get(_path(run, 2, "child"), headers=_as(parent))
    assert r.status_code == 403
    assert (
        api.anon.put(_path(run, 1, "child"), content=b"p", headers=_as(parent)).status_code == 403
    )
    # nor may the child write as a later attempt of itself
    assert api.anon.put(_path(run, 2, "child"), content=b"x", headers=_as(child)).status_code == 403


def test_oversize_checkpoints_are_refused_clearly(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = api.create_run(task_spec())["name"]
    own = _as(api.job(run, "a0", 1).credential)
    monkeypatch.setattr(api.plane.checkpoints, "max_bytes", 1000)
    r = api.anon.put(_path(run, 1), content=b"x" * 1001, headers=own)
    assert r.status_code == 413
    assert "checkpoint is over the limit of 1000 bytes" in r.json()["detail"]
    assert api.anon.put(_path(run, 1), content=b"x" * 1000, headers=own).status_code == 200
    # the wire limit holds whatever the server's data limit is
    assert api.plane.checkpoints.max_bytes <= wire.MAX_CHECKPOINT_BYTES
