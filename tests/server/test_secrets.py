"""The secret store: scopes, encryption at rest, and who may read values."""

from __future__ import annotations

import stat

from sqlalchemy import select

from loom.server._models import SecretRow
from tests.server.conftest import Api, task_spec


def _create(api: Api, key: str, value: str, **scope: object) -> dict[str, object]:
    r = api.client.post("/api/v1/secrets", json={"key": key, "value": value, **scope})
    assert r.status_code == 201, r.text
    return r.json()


def test_secrets_are_stored_encrypted_and_listed_without_values(api: Api) -> None:
    info = _create(api, "db-password", "hunter2-global")
    assert info["key"] == "db-password" and info["project"] is None and "value" not in info
    _create(api, "db-password", "hunter2-staging", domain="staging")
    listed = api.client.get("/api/v1/secrets")
    assert listed.status_code == 200 and "hunter2" not in listed.text
    assert [(s["key"], s["domain"]) for s in listed.json()] == [
        ("db-password", None),
        ("db-password", "staging"),
    ]
    only = api.client.get("/api/v1/secrets", params={"domain": "staging"}).json()
    assert [s["domain"] for s in only] == ["staging"]
    with api.plane.db.read() as s:
        stored = list(s.scalars(select(SecretRow.ciphertext)))
    assert len(stored) == 2 and not any("hunter2" in c for c in stored)
    key_file = api.settings.data_dir / "secrets-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_bad_secret_requests_are_clear(api: Api) -> None:
    _create(api, "token", "one")
    again = api.client.post("/api/v1/secrets", json={"key": "token", "value": "two"})
    assert again.status_code == 409 and "--overwrite" in again.json()["detail"]
    replaced = {"key": "token", "value": "two", "overwrite": True}
    assert api.client.post("/api/v1/secrets", json=replaced).status_code == 201
    unknown = {"key": "t", "value": "v", "project": "nope"}
    r = api.client.post("/api/v1/secrets", json=unknown)
    assert r.status_code == 404 and "project 'nope'" in r.json()["detail"]
    r = api.client.post("/api/v1/secrets", json={"key": "t", "value": "v", "domain": "qa"})
    assert r.status_code == 400 and "development" in r.json()["detail"]
    r = api.client.post("/api/v1/secrets", json={"key": "bad key!", "value": "v"})
    assert r.status_code == 422
    r = api.client.delete("/api/v1/secrets/token", params={"domain": "staging"})
    assert r.status_code == 404 and "domain 'staging'" in r.json()["detail"]
    assert api.client.delete("/api/v1/secrets/token").status_code == 204
    assert api.client.get("/api/v1/secrets").json() == []


def test_only_admins_manage_secrets(api: Api) -> None:
    created = api.client.post(
        "/api/v1/api-keys", json={"name": "plain", "projects": {"default": "member"}}
    ).json()
    plain = {"Authorization": f"Bearer {created['key']}"}
    body = {"key": "k", "value": "v"}
    assert api.anon.post("/api/v1/secrets", json=body, headers=plain).status_code == 403
    assert api.anon.get("/api/v1/secrets", headers=plain).status_code == 403
    assert api.anon.post("/api/v1/secrets", json=body).status_code == 401


def test_a_running_action_gets_the_most_specific_values_of_its_secrets(api: Api) -> None:
    api.client.post("/api/v1/projects", json={"name": "p2"})
    _create(api, "token", "global")
    _create(api, "token", "development", domain="development")
    _create(api, "token", "p2 staging", project="p2", domain="staging")
    _create(api, "token", "p2", project="p2")
    _create(api, "undeclared", "not for this task")
    task = task_spec(secrets=[{"key": "token"}, {"key": "absent", "mount": "/x"}])
    seen = {}
    for project, domain in (("default", "development"), ("p2", "staging"), ("p2", "production")):
        name = api.create_run(task, project=project, domain=domain)["name"]
        runtime = {"Authorization": f"Bearer {api.job(name, 'a0', 1).credential}"}
        url = f"/api/v1/runs/{name}/actions/a0/secrets"
        r = api.anon.get(url, headers=runtime)
        assert r.status_code == 200, r.text
        seen[(project, domain)] = r.json()
        # nobody else reads values, and nobody once the action has ended
        assert api.client.get(url).status_code == 403
        api.finish(name, "a0", 1, value=1)
        assert api.anon.get(url, headers=runtime).status_code == 401
    assert seen == {
        ("default", "development"): {"values": {"token": "development"}, "missing": ["absent"]},
        ("p2", "staging"): {"values": {"token": "p2 staging"}, "missing": ["absent"]},
        ("p2", "production"): {"values": {"token": "p2"}, "missing": ["absent"]},
    }
