"""Health, authentication, API keys, projects, OpenAPI and error shapes."""

from __future__ import annotations

import os
import stat

import pytest
from sqlalchemy import text

from loom.server import _keys
from tests.server.conftest import Api


def test_health_needs_no_key(api: Api) -> None:
    r = api.anon.get("/api/v1/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["api"] == "v1"


@pytest.mark.parametrize("header", [None, "Bearer nope", "Bearer loom_abc_def", "Basic xyz"])
def test_requests_without_a_valid_key_get_401_with_a_hint(api: Api, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for method, path in [
        ("GET", "/api/v1/runs"),
        ("GET", "/api/v1/openapi.json"),
        ("POST", "/api/v1/projects"),
        ("GET", "/api/v1/events"),
    ]:
        r = api.anon.request(method, path, headers=headers)
        assert r.status_code == 401, (path, r.text)
        detail = r.json()["detail"]
        assert str(api.settings.config_path) in detail
        assert "loom create api-key" in detail
        assert r.headers["www-authenticate"] == "Bearer"


def test_a_wrong_secret_for_a_real_key_id_is_refused(api: Api) -> None:
    key_id = _keys.split_key(api.admin_key)
    assert key_id is not None
    r = api.anon.get("/api/v1/whoami", headers={"Authorization": f"Bearer loom_{key_id[0]}_x"})
    assert r.status_code == 401


def test_keys_are_compared_in_constant_time(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = _keys.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(_keys.hmac, "compare_digest", spy)
    api.plane.keys._cache.clear()
    assert api.client.get("/api/v1/whoami").status_code == 200
    assert calls, "hmac.compare_digest was not used"


def test_whoami(api: Api) -> None:
    r = api.client.get("/api/v1/whoami")
    assert r.json()["name"] == "admin" and r.json()["admin"] is True


def test_api_keys_create_list_delete(api: Api) -> None:
    r = api.client.post("/api/v1/api-keys", json={"name": "ci", "projects": {"default": "member"}})
    assert r.status_code == 201, r.text
    created = r.json()
    secret = created["key"]
    assert created["name"] == "ci" and created["admin"] is False
    # the new key works, is not an admin, and its secret is never shown again
    other = {"Authorization": f"Bearer {secret}"}
    assert api.anon.get("/api/v1/whoami", headers=other).json()["name"] == "ci"
    assert api.anon.get("/api/v1/api-keys", headers=other).status_code == 403
    listed = api.client.get("/api/v1/api-keys").json()
    assert [k["name"] for k in listed] == ["admin", "ci"]
    assert all("key" not in k for k in listed)
    # only a hash is stored
    with api.plane.db.engine.connect() as conn:
        dump = repr(conn.execute(text("SELECT * FROM api_keys")).all())
    assert secret not in dump and secret.split("_", 2)[2] not in dump
    assert (
        api.client.post("/api/v1/api-keys", json={"name": "ci", "admin": True}).status_code == 409
    )
    assert api.client.delete("/api/v1/api-keys/ci").status_code == 204
    assert api.anon.get("/api/v1/whoami", headers=other).status_code == 401
    r = api.client.delete("/api/v1/api-keys/ci")
    assert r.status_code == 404 and "'ci'" in r.json()["detail"]


def test_the_last_admin_key_cannot_be_deleted(api: Api) -> None:
    r = api.client.delete("/api/v1/api-keys/admin")
    assert r.status_code == 409 and "last admin key" in r.json()["detail"]


def test_invalid_key_names_are_422(api: Api) -> None:
    assert api.client.post("/api/v1/api-keys", json={"name": "no spaces"}).status_code == 422


def test_projects(api: Api) -> None:
    listed = api.client.get("/api/v1/projects").json()
    assert [p["name"] for p in listed] == ["default"]
    assert listed[0]["domains"] == ["development", "staging", "production"]
    r = api.client.post("/api/v1/projects", json={"name": "ml", "description": "models"})
    assert r.status_code == 201 and r.json()["description"] == "models"
    assert api.client.post("/api/v1/projects", json={"name": "ml"}).status_code == 409
    assert [p["name"] for p in api.client.get("/api/v1/projects").json()] == ["default", "ml"]


def test_openapi_is_served_under_the_api_prefix(api: Api) -> None:
    doc = api.client.get("/api/v1/openapi.json").json()
    paths = doc["paths"]
    for path in [
        "/api/v1/runs",
        "/api/v1/runs/{run}/actions/{action}/attempts/{n}/finished",
        "/api/v1/bundles/{digest}",
        "/api/v1/events",
    ]:
        assert path in paths


def test_unknown_things_are_404_naming_them(api: Api) -> None:
    r = api.client.get("/api/v1/runs/nosuchrun")
    assert r.status_code == 404 and "'nosuchrun'" in r.json()["detail"]
    run = api.create_run()["name"]
    r = api.client.get(f"/api/v1/runs/{run}/actions/nope")
    assert r.status_code == 404 and "'nope'" in r.json()["detail"]
    r = api.client.get("/api/v1/runs?project=nope")
    assert r.status_code == 404 and "'nope'" in r.json()["detail"]
    r = api.client.post(
        "/api/v1/runs",
        json={
            "project": "ghost",
            "bundle": api.bundle,
            "root": {
                "name": "x",
                "task": {"module": "m", "attr": "a", "name": "e.a", "environment": "e"},
            },
        },
    )
    assert r.status_code == 404 and "'ghost'" in r.json()["detail"]
    r = api.client.post(
        f"/api/v1/runs/{run}/actions/a0/attempts/7/finished", json={"outputs": {"value": 1}}
    )
    assert r.status_code == 404 and "attempt 7" in r.json()["detail"]


def test_config_file_mode(api: Api) -> None:
    mode = stat.S_IMODE(os.stat(api.settings.config_path).st_mode)
    assert mode == 0o600


def test_policies_run_on_the_loop_unless_they_need_the_database(api: Api) -> None:
    # (before: every policy and the caller's lookup cost each request a worker thread)
    import asyncio
    import threading

    from loom.server._authz import on_loop_first

    db = api.plane.db
    seen: list[tuple[str, bool]] = []

    def check(read: bool) -> str:
        on_loop = threading.current_thread() is threading.main_thread()
        if read:
            with db.read():  # a cache miss: the database answers
                pass
        seen.append(("read" if read else "cached", on_loop))
        return "ok"

    dependency = on_loop_first(check)
    assert asyncio.run(dependency(False)) == "ok"
    assert asyncio.run(dependency(True)) == "ok"
    # the cached one ran on the loop; the one that needed the database was stopped there
    # before it touched it, and ran again in a worker thread
    assert seen == [("cached", True), ("read", False)]
