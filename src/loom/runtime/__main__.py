"""``python -m loom.runtime --endpoint URL --run RUN --action ACTION --attempt N [--spec-file F]``.

Also ``--zygote`` (the executor's fork server) and ``--worker --endpoint URL --socket PATH
--worker-id ID`` (a warm worker for a reusable environment).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from ._process import run_attempt


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv) == ["--zygote"]:
        from ._zygote import serve

        return serve()
    parser = argparse.ArgumentParser(prog="python -m loom.runtime", description=__doc__)
    parser.add_argument("--endpoint", required=True, help="the control plane's base URL")
    parser.add_argument("--run")
    parser.add_argument("--action")
    parser.add_argument("--attempt", type=int)
    parser.add_argument(
        "--spec-file", help="the attempt's spec, written by the executor (read, then removed)"
    )
    parser.add_argument("--worker", action="store_true", help="serve many attempts")
    parser.add_argument("--socket", help="the executor's Unix socket (with --worker)")
    parser.add_argument("--worker-id", help="this worker's name for the executor")
    args = parser.parse_args(argv)
    if args.worker:
        if not (args.socket and args.worker_id):
            parser.error("--worker needs --socket and --worker-id")
        from ._worker import serve_worker

        return asyncio.run(serve_worker(args.endpoint, args.socket, args.worker_id))
    if args.run is None or args.action is None or args.attempt is None:
        parser.error("--run, --action and --attempt are required")
    return asyncio.run(
        run_attempt(args.endpoint, args.run, args.action, args.attempt, args.spec_file)
    )


if __name__ == "__main__":
    sys.exit(main())
