"""``python -m loom.server``: parse the command line and serve."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ._errors import ConfigurationError
from ._settings import DEFAULT_HOST, DEFAULT_PORT, ServerSettings


def main(argv: Sequence[str] | None = None) -> int:
    """Run the control plane in this process; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m loom.server",
        description="Run the loom control plane: API, scheduler and local executor.",
    )
    parser.add_argument("--host", default=None, help=f"address to listen on ({DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=int, default=None, help=f"port to listen on ({DEFAULT_PORT}; 0: any free)"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="where the database, objects and logs live ($LOOM_HOME or ~/.loom)",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        default=None,
        help="allow listening on a non-loopback address (other machines can reach the API)",
    )
    parser.add_argument(
        "--new-admin-key",
        action="store_true",
        help="mint a new admin API key and (re)write the client configuration file",
    )
    parser.add_argument("--log-level", default="WARNING", help="server log level (WARNING)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = ServerSettings.load(
            data_dir=args.data_dir, host=args.host, port=args.port, allow_remote=args.allow_remote
        )
        from ._serve import serve  # the heavy imports, once the arguments are known good

        serve(settings, new_admin_key=args.new_admin_key)
    except ConfigurationError as e:
        print(f"loom server: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0
