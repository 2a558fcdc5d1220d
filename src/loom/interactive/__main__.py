"""``python -m loom.interactive resume [--fail] | abort | status [--output json]``.

For use inside a session (the "Resume Task" launch configuration, the loom VS Code extension,
a terminal). Exit status 0 on success; 1 with the reason on stderr otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import LoomError
from ._commands import abort, resume, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loom.interactive", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    resume_cmd = commands.add_parser("resume", help="run the edited task and close the session")
    resume_cmd.add_argument("--fail", action="store_true", help="give up: fail the action")
    commands.add_parser("abort", help="abort the action and close the session")
    status_cmd = commands.add_parser("status", help="the session's state and idle deadline")
    status_cmd.add_argument("--output", "-o", choices=["text", "json"], default="text")
    args = parser.parse_args(argv)
    try:
        if args.command == "resume":
            print("resuming the task...", file=sys.stderr, flush=True)
            resume(fail=args.fail)
            print("the task " + ("was failed" if args.fail else "succeeded") + "; session closed")
        elif args.command == "abort":
            abort()
            print("action aborted; session closed")
        else:
            info = status()
            deadline = info.idle_deadline.timestamp() if info.idle_deadline else None
            doc = {
                "state": info.state,
                "max_idle_seconds": info.max_idle_seconds,
                "idle_deadline": deadline,
                "url": info.origin + info.url,
            }
            if args.output == "json":
                print(json.dumps(doc))
            else:
                print("\n".join(f"{k}: {v}" for k, v in doc.items()))
    except LoomError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
