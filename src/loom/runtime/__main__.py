"""``python -m loom.runtime --endpoint URL --run RUN --action ACTION --attempt N``."""

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
    parser.add_argument("--run", required=True)
    parser.add_argument("--action", required=True)
    parser.add_argument("--attempt", required=True, type=int)
    args = parser.parse_args(argv)
    return asyncio.run(run_attempt(args.endpoint, args.run, args.action, args.attempt))


if __name__ == "__main__":
    sys.exit(main())
