"""The "Interactive Debugging" launch configuration, spoken to debugpy's adapter over DAP
the way VS Code does when the user presses F5 (see :mod:`tests._dap`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loom.interactive._workspace import LAUNCH_DEBUG, prepare_workspace
from tests._dap import TIMEOUT, DapClient, local_variables, stop_at_breakpoint, substitute

from .test_workspace import INPUTS, PYTHON, SESSION, make_bundle


@pytest.mark.parametrize(
    ("attr", "expected"),
    [("total", "pen@3 x4 = 24 (real)"), ("total_async", "async pen@3 = 24")],
)
def test_interactive_debugging_stops_at_a_breakpoint_with_the_real_inputs(
    tmp_path: Path, attr: str, expected: str
) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    inputs = INPUTS if attr == "total" else {k: INPUTS[k] for k in ("item", "count")}
    ws = prepare_workspace(
        tmp_path / "ws", bundle, "shop.tasks", attr, inputs, python=PYTHON, session=SESSION
    )
    assert ws.launch is not None
    configs = json.loads(ws.launch.read_text())["configurations"]
    (config,) = [c for c in configs if c["name"] == LAUNCH_DEBUG]
    config = substitute(config, ws.root)
    source = ws.root / "shop" / "tasks.py"
    line = next(
        n
        for n, text in enumerate(source.read_text().splitlines(), 1)
        if text.endswith(f"# breakpoint: {attr}")
    )

    # The adapter as loom's extension starts it: the launch configuration's interpreter.
    client = DapClient([config["python"], "-m", "debugpy.adapter"], cwd=ws.root)
    try:
        stopped = stop_at_breakpoint(client, config, source, line)
        frames = client.call("stackTrace", threadId=stopped["body"]["threadId"])["stackFrames"]
        top = frames[0]
        assert top["name"] == attr
        assert Path(top["source"]["path"]).resolve() == source.resolve()
        assert top["line"] == line
        variables = local_variables(client, top)
        assert variables["count"]["value"] == "4"
        assert variables["item"]["value"] == "Item(name='pen', price=3)"
        assert variables["item"]["type"] == "Item"
        if attr == "total":
            assert variables["note"]["value"] == "'real'"
        # justMyCode is off: loom's own frames (the local run calling the task) are visible
        assert any("/loom/" in f.get("source", {}).get("path", "") for f in frames[1:])

        client.call("continue", threadId=stopped["body"]["threadId"])
        exited = client.event("exited")
        assert exited["body"]["exitCode"] == 0
        (debuggee,) = client.debuggees
        out = debuggee.communicate(timeout=TIMEOUT)[0].decode()
        assert f"returned {expected!r}" in out, out
        client.request("disconnect")
    finally:
        client.close()


def test_adapter_is_the_one_loom_depends_on() -> None:
    # loom's extension runs `<interpreter> -m debugpy.adapter`: debugpy must be importable there.
    done = subprocess.run(
        [sys.executable, "-c", "import debugpy.adapter, debugpy; print(debugpy.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
