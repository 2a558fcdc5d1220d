"""First start: the admin API key and the client configuration file (DESIGN §7)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sqlalchemy import select

from .. import wire
from ._db import Database
from ._errors import ConfigurationError
from ._keys import KeyService
from ._models import ApiKey

ADMIN_KEY_NAME = "admin"


def write_client_config(path: Path, endpoint: str, api_key: str) -> None:
    """Write the CLI's configuration, readable by its owner only (it holds a secret)."""
    import yaml

    content = yaml.safe_dump(
        {"endpoint": endpoint, "api_key": api_key, "project": "default", "domain": "development"},
        sort_keys=False,
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # mkstemp creates the file 0600, so the key is never readable by others, not even
        # briefly; the rename makes the new file appear whole
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(content)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise ConfigurationError(f"cannot write the client configuration {path}: {e}") from e


def bootstrap_admin_key(
    db: Database, keys: KeyService, config_path: Path, endpoint: str, *, new_key: bool = False
) -> str | None:
    """Create the admin key on first start (or when ``new_key``) and write ``config_path``.

    Returns a message for the operator, or ``None`` when there is nothing to say.
    """
    if keys.count() and not new_key:
        if config_path.exists():
            return None
        return (
            f"note: no client configuration at {config_path}. With an admin key, create a key "
            "with `loom create api-key NAME`; without one, restart the server with "
            "--new-admin-key to mint a new admin key and write that file"
        )
    name = ADMIN_KEY_NAME
    with db.read() as s:
        taken = set(s.scalars(select(ApiKey.name)))
    suffix = 1
    while name in taken:
        suffix += 1
        name = f"{ADMIN_KEY_NAME}-{suffix}"
    created = keys.create(wire.ApiKeyCreate(name=name, admin=True))
    write_client_config(config_path, endpoint, created.key)
    return f"created admin API key {name!r}; client configuration written to {config_path}"
