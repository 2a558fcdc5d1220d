"""`loom get|create|delete ...`: argument errors come before any request to a server."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli


def test_a_secret_value_is_given_once(tmp_path: Path, loom_home: Path) -> None:
    value = tmp_path / "value.txt"
    value.write_text("v")
    result = run_cli("create", "secret", "k", "--value", "v", "--from-file", str(value))
    assert result.returncode == 2
    assert "--value or --from-file, not both" in result.stderr


def test_a_secret_domain_must_be_known(loom_home: Path) -> None:
    result = run_cli("create", "secret", "k", "--value", "v", "--domain", "qa")
    assert result.returncode == 2 and "'development'" in result.stderr


def test_secret_commands_explain_themselves(loom_home: Path) -> None:
    result = run_cli("create", "secret", "--help")
    assert result.returncode == 0
    assert "hidden prompt" in result.stdout and "most specific scope" in result.stdout


def test_a_malformed_secret_key_is_refused_before_the_value_is_asked(loom_home: Path) -> None:
    result = run_cli("create", "secret", "bad key")
    assert result.returncode == 2
    assert "'bad key' is not a secret key" in result.stderr and "Traceback" not in result.stderr


def test_an_oversized_secret_value_is_refused(tmp_path: Path, loom_home: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text("x" * (64 * 1024 + 1))
    result = run_cli("create", "secret", "k", "--from-file", str(big))
    assert result.returncode == 2 and "at most 65536" in result.stderr
