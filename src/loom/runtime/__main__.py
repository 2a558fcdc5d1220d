"""``python -m loom.runtime --endpoint URL --run RUN --action ACTION --attempt N [--spec-file F]``.

Also ``--zygote`` (the executor's fork server) and ``--worker --endpoint URL --socket PATH
--worker-id ID`` (a warm worker for a reusable environment). The executor builds these command
lines from ``loom.wire`` (``AttemptArgs``, ``WorkerArgs``, ``ZYGOTE_ARGV``), which parses them
here too.
"""

from __future__ import annotations

import asyncio
import sys

from .. import wire
from ._process import run_attempt


def main(argv: list[str] | None = None) -> int:
    try:
        args = wire.parse_runtime_argv(sys.argv[1:] if argv is None else argv)
    except ValueError as e:
        print(f"python -m loom.runtime: {e}\n{__doc__}", file=sys.stderr)
        return 2
    if args is None:
        from ._zygote import serve

        return serve()
    if isinstance(args, wire.WorkerArgs):
        from ._worker import serve_worker

        return asyncio.run(serve_worker(args.endpoint, args.socket, args.worker_id))
    return asyncio.run(
        run_attempt(args.endpoint, args.run, args.action, args.attempt, args.spec_file)
    )


if __name__ == "__main__":
    sys.exit(main())
