"""Settings, migrations and the object stores (a local directory; S3 against moto_server)."""

from __future__ import annotations

import shutil
import stat
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from loom.server import ConfigurationError, ServerSettings
from loom.server._db import HEAD_REVISION, MIGRATIONS, Database
from loom.server._errors import NotFoundError
from loom.server._models import Base
from loom.server._objects import LocalObjectStore, ObjectStore, S3ObjectStore, check_key

# -- settings ---------------------------------------------------------------------------------


def test_settings_defaults(tmp_path: Path) -> None:
    s = ServerSettings.load({"LOOM_HOME": str(tmp_path)})
    assert s.data_dir == tmp_path and s.config_path == tmp_path / "config.yaml"
    assert s.database_url == f"sqlite:///{tmp_path / 'server.db'}"
    assert s.object_store == str(tmp_path / "objects")
    assert s.host == "127.0.0.1" and s.port == 8377
    # no count of slots: the attempts' requests (small by default) decide how many run
    assert s.executor_slots is None and s.executor_gpus is None
    assert s.default_cpu == 0.01 and s.default_memory_bytes == 128 << 20
    assert s.runtime_command == (sys.executable, "-m", "loom.runtime")
    assert s.heartbeat_timeout_s == 90 and s.heartbeat_interval_s == 10


def test_settings_from_the_environment(tmp_path: Path) -> None:
    env = {
        "LOOM_HOME": str(tmp_path / "home"),
        "LOOM_CONFIG": str(tmp_path / "c.yaml"),
        "LOOM_DATABASE_URL": "postgresql+psycopg://u@h/db",
        "LOOM_OBJECT_STORE": "s3://bucket/prefix",
        "LOOM_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "LOOM_EXECUTOR_SLOTS": "7",
        "LOOM_EXECUTOR_GPUS": "2",
        "LOOM_DEFAULT_CPU": "0.25",
        "LOOM_DEFAULT_MEMORY": "1Gi",
        "LOOM_RUNTIME_COMMAND": "python3 /x/fake.py --flag",
        "LOOM_HEARTBEAT_TIMEOUT": "4.5",
        "LOOM_SECRET_X": "hidden",
        "PATH": "/bin",
    }
    s = ServerSettings.load(env, data_dir=tmp_path / "explicit", port=0)
    assert s.data_dir == tmp_path / "explicit"  # the command line wins over LOOM_HOME
    assert s.config_path == tmp_path / "c.yaml"
    assert s.database_url.startswith("postgresql") and not s.sqlite
    assert s.object_store == "s3://bucket/prefix" and s.s3_endpoint_url == "http://127.0.0.1:9000"
    assert s.executor_slots == 7 and s.port == 0 and s.executor_gpus == 2
    assert s.default_cpu == 0.25 and s.default_memory_bytes == 1 << 30
    assert s.runtime_command == ("python3", "/x/fake.py", "--flag")
    assert s.heartbeat_timeout_s == 4.5 and s.heartbeat_interval_s == 0.75
    assert s.child_env == {"PATH": "/bin"}  # nothing LOOM_* leaks into action processes


@pytest.mark.parametrize(
    "env,overrides,needle",
    [
        ({}, {"host": "0.0.0.0"}, "--allow-remote"),
        ({}, {"host": "192.168.1.10"}, "refusing to listen"),
        ({"LOOM_EXECUTOR_SLOTS": "many"}, {}, "whole number"),
        ({"LOOM_EXECUTOR_SLOTS": "0"}, {}, "at least 1"),
        ({"LOOM_EXECUTOR_GPUS": "-1"}, {}, "cannot be negative"),
        ({"LOOM_DEFAULT_CPU": "0"}, {}, "LOOM_DEFAULT_CPU must be more than 0"),
        ({"LOOM_DEFAULT_CPU": "nan"}, {}, "LOOM_DEFAULT_CPU must be more than 0"),
        ({"LOOM_DEFAULT_MEMORY": "lots"}, {}, "LOOM_DEFAULT_MEMORY: expected a size"),
        ({"LOOM_DEFAULT_MEMORY": "0"}, {}, "LOOM_DEFAULT_MEMORY must be more than 0"),
        ({"LOOM_HEARTBEAT_TIMEOUT": "soon"}, {}, "LOOM_HEARTBEAT_TIMEOUT must be a number"),
        ({"LOOM_HEARTBEAT_TIMEOUT": "0"}, {}, "more than 0 seconds"),
    ],
)
def test_bad_settings(env: dict[str, str], overrides: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        ServerSettings.load(env, **overrides)


def test_remote_hosts_need_allow_remote() -> None:
    assert ServerSettings.load({}, host="0.0.0.0", allow_remote=True).client_host() == "127.0.0.1"
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        ServerSettings.load({}, host=host)


# -- migrations -------------------------------------------------------------------------------


def test_migrations_match_the_models(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    with db.engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
        assert diff == []
        assert conn.execute(text("SELECT name FROM projects")).scalars().all() == ["default"]
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
            HEAD_REVISION
        )
    db.migrate()  # a second start is a no-op
    db.dispose()


def test_head_revision_constant_matches_the_scripts() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_an_unreachable_database_is_a_clear_error() -> None:
    db = Database("postgresql+psycopg://nobody:secret@127.0.0.1:1/none")
    with pytest.raises(ConfigurationError) as e:
        db.migrate()
    assert "cannot prepare database" in str(e.value) and "secret" not in str(e.value)


# -- object stores ----------------------------------------------------------------------------


def _exercise(store: ObjectStore, tmp_path: Path) -> None:
    assert not store.exists("a/b.json")
    with pytest.raises(NotFoundError):
        store.get_bytes("a/b.json")
    store.put_bytes("a/b.json", b"0123456789")
    assert store.exists("a/b.json") and store.get_bytes("a/b.json") == b"0123456789"
    assert b"".join(store.iter_bytes("a/b.json", 4)) == b"456789"
    assert b"".join(store.iter_bytes("a/b.json", 10)) == b""
    source = tmp_path / "src.bin"
    source.write_bytes(b"file body")
    store.put_file("c/d.bin", source, move=True)
    assert not source.exists() and store.get_bytes("c/d.bin") == b"file body"
    source.write_bytes(b"copied")
    store.put_file("c/e.bin", source)
    assert source.exists() and store.get_bytes("c/e.bin") == b"copied"
    store.delete("a/b.json")
    assert not store.exists("a/b.json")
    for bad in ("../x", "/abs", "a/../b", "a//b", ""):
        with pytest.raises(ValueError):
            store.put_bytes(bad, b"")
        with pytest.raises(ValueError):
            store.put_content(bad, b"")
    for _ in range(2):  # content under its own key: the second write keeps the first
        store.put_content("v/one.json", b'{"x": 1}')
        assert store.get_bytes("v/one.json") == b'{"x": 1}'


def test_local_object_store(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    _exercise(store, tmp_path)
    store.put_bytes("x/y", b"1")
    assert store.local_path("x/y") == tmp_path / "objects" / "x" / "y"
    assert not list((tmp_path / "objects").rglob(".tmp-*"))
    assert stat.S_IMODE((tmp_path / "objects" / "x" / "y").stat().st_mode) == 0o600
    shutil.rmtree(tmp_path / "objects" / "x")  # a directory it made goes away: made again
    store.put_bytes("x/z", b"2")
    assert store.get_bytes("x/z") == b"2"
    # a content object a crash left short is written again by the next write of that content
    (tmp_path / "objects" / "v" / "two.json").write_bytes(b'{"x"')
    store.put_content("v/two.json", b'{"x": 2}')
    assert store.get_bytes("v/two.json") == b'{"x": 2}'


def test_check_key() -> None:
    assert check_key("values/ab.json") == "values/ab.json"
    with pytest.raises(ValueError):
        check_key("values/../../etc")


def test_s3_object_store(moto_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    store = S3ObjectStore(s3_bucket, "loom/data", endpoint_url=moto_endpoint, region=None)
    store.check()
    _exercise(store, tmp_path)
    assert store.local_path("c/d.bin") is None
    import boto3

    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=moto_endpoint).list_objects_v2(Bucket=s3_bucket)[
            "Contents"
        ]
    ]
    assert all(k.startswith("loom/data/") for k in keys)


def test_a_missing_bucket_is_a_clear_error(moto_endpoint: str, s3_bucket: str) -> None:
    from loom.server._objects import open_object_store

    settings = ServerSettings.load(
        {"LOOM_OBJECT_STORE": "s3://no-such-bucket/x", "LOOM_S3_ENDPOINT_URL": moto_endpoint}
    )
    with pytest.raises(ConfigurationError, match="no-such-bucket"):
        open_object_store(settings)
    settings = ServerSettings.load({"LOOM_OBJECT_STORE": "gs://b"})
    with pytest.raises(ConfigurationError, match="not supported"):
        open_object_store(settings)
