"""Secrets in local mode: from LOOM_SECRET_<KEY> or the secrets file, never from nowhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import loom
from loom.errors import MissingSecretError

env = loom.TaskEnvironment(
    "secretive",
    secrets=[loom.Secret("api-key", as_env_var="API_KEY"), loom.Secret("db-pass")],
)


@env.task
async def read_secrets() -> dict[str, str | None]:
    c = loom.ctx()
    assert c is not None
    return {
        "env": os.environ.get("API_KEY"),
        "default_env": os.environ.get("DB_PASS"),
        "accessor": c.secrets["api-key"],
        "get": c.secrets.get("db-pass"),
    }


def test_secrets_from_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOM_SECRET_API_KEY", "k-123")
    monkeypatch.setenv("LOOM_SECRET_DB_PASS", "p-456")
    assert loom.run(read_secrets).outputs() == {
        "env": "k-123",
        "default_env": "p-456",
        "accessor": "k-123",
        "get": "p-456",
    }
    assert "API_KEY" not in os.environ


def test_secrets_from_the_secrets_file(loom_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loom_home.mkdir(parents=True)
    secrets = loom_home / "secrets.yaml"
    secrets.write_text("api-key: from-file\ndb-pass: also-file\n")
    secrets.chmod(0o600)
    monkeypatch.setenv("LOOM_SECRET_DB_PASS", "env-wins")
    out = loom.run(read_secrets).outputs()
    assert out["accessor"] == "from-file" and out["get"] == "env-wins"


def test_missing_secret_names_the_secret_and_the_fix() -> None:
    with pytest.raises(MissingSecretError) as info:
        loom.run(read_secrets)
    message = str(info.value)
    assert "secret 'api-key' is not set" in message
    assert "LOOM_SECRET_API_KEY" in message and "secrets.yaml" in message


def test_undeclared_secret_access_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    @env.task
    async def peek() -> str:
        c = loom.ctx()
        assert c is not None
        return c.secrets["other"]

    monkeypatch.setenv("LOOM_SECRET_API_KEY", "a")
    monkeypatch.setenv("LOOM_SECRET_DB_PASS", "b")
    with pytest.raises(MissingSecretError, match="was not declared"):
        loom.run(peek)


def test_secret_values_do_not_show_in_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOM_SECRET_API_KEY", "super-secret-value")
    monkeypatch.setenv("LOOM_SECRET_DB_PASS", "b")

    @env.task
    async def show() -> str:
        c = loom.ctx()
        assert c is not None
        return repr(c.secrets) + repr(c)

    text = loom.run(show).outputs()
    assert "super-secret-value" not in text and "api-key" in text


def test_a_missing_secret_fails_the_action_and_is_recorded() -> None:
    @loom.TaskEnvironment("catcher").task
    async def parent() -> str:
        try:
            await read_secrets()
        except MissingSecretError as e:
            return f"caught: {e}"
        return "no error"

    run = loom.run(parent)
    assert run.outputs().startswith("caught: secret 'api-key' is not set")
    child = next(a for a in run.actions() if a.task == "secretive.read_secrets")
    assert child.phase == "FAILED" and child.attempts == 0
    assert child.error is not None and "MissingSecretError" in child.error


def test_a_malformed_secrets_file_is_named(loom_home: Path) -> None:
    loom_home.mkdir(parents=True)
    (loom_home / "secrets.yaml").write_text("- just\n- a list\n")
    with pytest.raises(loom.errors.ConfigError, match="secrets file .* must hold a mapping"):
        loom.run(read_secrets)


def test_mounted_secrets_are_whole_for_concurrent_readers(monkeypatch: pytest.MonkeyPatch) -> None:
    mounted = loom.TaskEnvironment("mounted", secrets=[loom.Secret("cert", mount="/etc/cert")])

    @mounted.task
    def read_cert() -> str:
        c = loom.ctx()
        assert c is not None
        return c.secrets.path("cert").read_text()

    @loom.TaskEnvironment("readers").task
    async def many(n: int) -> list[str]:
        import asyncio

        return list(await asyncio.gather(*(read_cert.aio() for _ in range(n))))

    monkeypatch.setenv("LOOM_SECRET_CERT", "-----BEGIN-----" * 100)
    assert set(loom.run(many, n=40).outputs()) == {"-----BEGIN-----" * 100}
