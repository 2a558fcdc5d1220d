"""The workspace of an interactive session: generated files, and that they really work."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from loom.interactive._workspace import (
    ENTRYPOINT_NAME,
    LAUNCH_DEBUG,
    LAUNCH_RESUME,
    Workspace,
    diff_workspace,
    prepare_workspace,
)

PYTHON = sys.executable
SESSION = {"endpoint": "http://127.0.0.1:1", "api_key": "secret-key", "run": "r1", "action": "a0"}

# A task in a package that imports its helpers relatively, calls a child task, and takes a
# dataclass: the entrypoint must import it as ``shop.tasks`` from the workspace root.
PACKAGE = {
    "shop/__init__.py": "",
    "shop/helpers.py": """\
        from dataclasses import dataclass


        @dataclass
        class Item:
            name: str
            price: int


        def label(item: Item) -> str:
            return f"{item.name}@{item.price}"
        """,
    "shop/tasks.py": """\
        import asyncio

        import loom

        from .helpers import Item, label

        env = loom.TaskEnvironment("shop")


        @env.task
        def double(x: int) -> int:
            return 2 * x


        @env.task
        def total(item: Item, count: int, note: str = "none") -> str:
            amount = double(item.price) * count  # breakpoint: total
            return f"{label(item)} x{count} = {amount} ({note})"


        @env.task
        async def total_async(item: Item, count: int) -> str:
            await asyncio.sleep(0)
            amount = await double.aio(item.price)  # breakpoint: total_async
            return f"async {label(item)} = {amount * count}"


        @env.task
        def ping() -> str:
            return "pong"


        @env.task
        def run(count: int) -> int:  # named like a variable of the notebook
            return count + 1
        """,
    "README.md": "A shop.\n",
}
INPUTS = {"item": {"name": "pen", "price": 3}, "count": 4, "note": "real"}


def make_bundle(root: Path, files: dict[str, str] = PACKAGE) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def prepare(tmp_path: Path, **kw: object) -> tuple[Path, Workspace]:
    bundle = make_bundle(tmp_path / "bundle")
    args: dict[str, object] = {
        "python": PYTHON,
        "session": SESSION,
        "kind": "vscode",
    }
    args.update(kw)
    attr = str(args.pop("attr", "total"))
    inputs = args.pop("inputs", INPUTS)
    ws = prepare_workspace(tmp_path / "ws", bundle, "shop.tasks", attr, inputs, **args)  # type: ignore[arg-type]
    return bundle, ws


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run_entrypoint(path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, str(path)], cwd=cwd, capture_output=True, text=True, timeout=120)


# -- generated files ----------------------------------------------------------------------------


def test_vscode_workspace_files(tmp_path: Path) -> None:
    bundle, ws = prepare(tmp_path)
    before = tree(bundle)
    root = tmp_path / "ws"
    assert ws.root == root
    assert ws.entrypoint == root / ENTRYPOINT_NAME
    assert set(ws.generated) == {
        ".loom/inputs.json",
        ".loom/session.json",
        ".loom/workspace.json",
        ".vscode/launch.json",
        ".vscode/settings.json",
        ENTRYPOINT_NAME,
    }
    assert ws.notebook is None
    # the bundle is copied, and left as it was
    for rel, data in before.items():
        assert (root / rel).read_bytes() == data
    assert tree(bundle) == before

    # the session's secrets and the inputs are private
    assert json.loads(ws.session.read_text()) == SESSION
    assert stat.S_IMODE(ws.session.stat().st_mode) == 0o600
    assert stat.S_IMODE((root / ".loom").stat().st_mode) == 0o700
    assert json.loads(ws.inputs.read_text()) == INPUTS

    assert ws.launch == root / ".vscode" / "launch.json"
    assert ws.settings == root / ".vscode" / "settings.json"
    launch = json.loads(ws.launch.read_text())
    configs = {c["name"]: c for c in launch["configurations"]}
    assert list(configs) == [LAUNCH_DEBUG, LAUNCH_RESUME]
    debug, resume = configs[LAUNCH_DEBUG], configs[LAUNCH_RESUME]
    assert debug["type"] == resume["type"] == "loom-python"
    assert debug["request"] == resume["request"] == "launch"
    assert debug["python"] == resume["python"] == PYTHON
    assert debug["program"] == "${workspaceFolder}/" + ENTRYPOINT_NAME
    assert debug["justMyCode"] is False
    assert debug["cwd"] == resume["cwd"] == "${workspaceFolder}"
    assert resume["module"] == "loom.interactive"
    assert resume["args"] == ["resume"]
    assert resume["console"] == "integratedTerminal"

    settings = json.loads(ws.settings.read_text())
    assert settings["python.defaultInterpreterPath"] == PYTHON
    assert settings["files.exclude"][".loom"] is True
    assert settings["terminal.integrated.env.linux"]["PATH"].startswith(
        os.path.dirname(PYTHON) + ":"
    )

    source = ws.entrypoint.read_text()
    compile(source, str(ws.entrypoint), "exec")
    assert "from shop.tasks import total as task" in source
    assert '"item": real["item"],' in source
    assert "def total" not in source  # the task is imported, never pasted


def test_debug_type_for_microsofts_python_extension(tmp_path: Path) -> None:
    _, ws = prepare(tmp_path, debug_type="debugpy")
    assert ws.launch is not None
    launch = json.loads(ws.launch.read_text())
    assert {c["type"] for c in launch["configurations"]} == {"debugpy"}


def test_entrypoint_name_never_clobbers_the_users_file(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", {**PACKAGE, ENTRYPOINT_NAME: "print('mine')\n"})
    ws = prepare_workspace(
        tmp_path / "ws", bundle, "shop.tasks", "total", INPUTS, python=PYTHON, session=SESSION
    )
    assert ws.entrypoint.name == "loom_debug_2.py"
    assert (tmp_path / "ws" / ENTRYPOINT_NAME).read_text() == "print('mine')\n"
    assert ENTRYPOINT_NAME not in ws.generated
    assert ws.launch is not None
    launch = json.loads(ws.launch.read_text())
    assert launch["configurations"][0]["program"].endswith("/loom_debug_2.py")
    assert run_entrypoint(ws.entrypoint, tmp_path).returncode == 0


def test_refuses_bad_places_and_names(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    common = {"python": PYTHON, "session": SESSION}
    with pytest.raises(ValueError, match="outside the code bundle"):
        prepare_workspace(bundle / "ws", bundle, "shop.tasks", "total", {}, **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outside the code bundle"):
        prepare_workspace(bundle, bundle, "shop.tasks", "total", {}, **common)  # type: ignore[arg-type]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("")
    with pytest.raises(ValueError, match="not empty"):
        prepare_workspace(busy, bundle, "shop.tasks", "total", {}, **common)  # type: ignore[arg-type]
    for module, attr in [("shop.tasks; import os", "total"), ("shop.tasks", "a.b"), ("", "x")]:
        with pytest.raises(ValueError):
            prepare_workspace(tmp_path / "w2", bundle, module, attr, {}, **common)  # type: ignore[arg-type]
    assert not (bundle / ".loom").exists()


def test_copied_code_is_editable_even_from_a_read_only_bundle(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    (bundle / "shop" / "__pycache__").mkdir()
    (bundle / "shop" / "__pycache__" / "tasks.cpython-311.pyc").write_bytes(b"stale")
    for p in bundle.rglob("*"):
        if p.is_file():
            p.chmod(0o444)
    try:
        ws = prepare_workspace(
            tmp_path / "ws", bundle, "shop.tasks", "total", INPUTS, python=PYTHON, session=SESSION
        )
        assert os.access(ws.root / "shop" / "tasks.py", os.W_OK)
        assert not (ws.root / "shop" / "__pycache__").exists()
    finally:
        for p in bundle.rglob("*"):
            if p.is_file():
                p.chmod(0o644)


# -- the entrypoint runs the task with its real inputs ------------------------------------------


def test_entrypoint_runs_a_package_task_with_relative_imports(tmp_path: Path) -> None:
    _, ws = prepare(tmp_path)
    done = run_entrypoint(ws.entrypoint, cwd=tmp_path)  # not the workspace: sys.path must not care
    assert done.returncode == 0, done.stderr
    assert "item = Item(name='pen', price=3)" in done.stdout
    assert "count = 4" in done.stdout
    assert "note = 'real'" in done.stdout
    assert "returned 'pen@3 x4 = 24 (real)'" in done.stdout


def test_entrypoint_runs_an_async_task(tmp_path: Path) -> None:
    inputs = {"item": {"name": "ink", "price": 5}, "count": 2}
    _, ws = prepare(tmp_path, attr="total_async", inputs=inputs)
    done = run_entrypoint(ws.entrypoint, cwd=ws.root)
    assert done.returncode == 0, done.stderr
    assert "returned 'async ink@5 = 20'" in done.stdout


def test_entrypoint_of_a_task_without_inputs(tmp_path: Path) -> None:
    _, ws = prepare(tmp_path, attr="ping", inputs={})
    assert "inputs = {}" in ws.entrypoint.read_text()
    done = run_entrypoint(ws.entrypoint, cwd=ws.root)
    assert done.returncode == 0, done.stderr
    assert "returned 'pong'" in done.stdout


def test_entrypoint_inputs_are_editable_and_edits_to_the_code_count(tmp_path: Path) -> None:
    _, ws = prepare(tmp_path)
    source = ws.entrypoint.read_text()
    ws.entrypoint.write_text(source.replace('"count": real["count"],', '"count": 10,'))
    helpers = ws.root / "shop" / "helpers.py"
    helpers.write_text(helpers.read_text().replace('f"{item.name}@', 'f"EDITED {item.name}@'))
    done = run_entrypoint(ws.entrypoint, cwd=ws.root)
    assert done.returncode == 0, done.stderr
    assert "returned 'EDITED pen@3 x10 = 60 (real)'" in done.stdout


def test_entrypoint_shows_the_tasks_own_error(tmp_path: Path) -> None:
    _, ws = prepare(tmp_path, inputs={**INPUTS, "item": {"name": "pen", "price": None}})
    done = run_entrypoint(ws.entrypoint, cwd=ws.root)
    assert done.returncode != 0
    assert "Traceback" in done.stderr


# -- Jupyter ------------------------------------------------------------------------------------


def execute_notebook(path: Path, *, skip_last: bool = True):  # type: ignore[no-untyped-def]
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    nbformat.validate(nb)
    resume_cell = nb.cells[-1]
    if skip_last:
        nb.cells = nb.cells[:-1]
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(path.parent)}},
    )
    return client, nb, resume_cell


def run_cell_index(nb) -> int:  # type: ignore[no-untyped-def]
    (index,) = [i for i, c in enumerate(nb.cells) if "run_aio(" in "".join(c.source)]
    return index


def outputs_text(cell) -> str:  # type: ignore[no-untyped-def]
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
        elif out.get("output_type") == "error":
            parts.append(f"{out['ename']}: {out['evalue']}")
    return "".join(parts)


def test_notebook_runs_the_task_with_the_real_inputs(tmp_path: Path) -> None:
    _, ws = prepare(tmp_path, kind="jupyter", notebook_dir="notebooks")
    assert ws.notebook == tmp_path / "ws" / "notebooks" / "loom_debug.ipynb"
    assert "notebooks/loom_debug.ipynb" in ws.generated
    assert ws.launch is None and ws.settings is None
    text = ws.notebook.read_text()
    assert "def total" not in text  # never the function's source (Flyte's notebook did that)

    client, nb, resume_cell = execute_notebook(ws.notebook)
    assert "".join(resume_cell.source) == "from loom.interactive import resume\n\nresume()"
    client.execute()
    run_cell = run_cell_index(nb)
    inputs_text = outputs_text(nb.cells[run_cell - 1])
    assert "Item(name='pen', price=3)" in inputs_text and "'count': 4" in inputs_text
    assert "'pen@3 x4 = 24 (real)'" in outputs_text(nb.cells[run_cell])
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert errors == []


def test_notebook_runs_an_async_task_and_picks_up_edits(tmp_path: Path) -> None:
    inputs = {"item": {"name": "ink", "price": 5}, "count": 2}
    _, ws = prepare(tmp_path, kind="jupyter", attr="total_async", inputs=inputs)
    assert ws.notebook == tmp_path / "ws" / "loom_debug.ipynb"
    client, nb, _ = execute_notebook(ws.notebook)
    run_cell = run_cell_index(nb)
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        assert "'async ink@5 = 20'" in outputs_text(nb.cells[run_cell])
        # edit the code in the workspace and run the cell again: the edit takes effect
        helpers = ws.root / "shop" / "helpers.py"
        helpers.write_text(helpers.read_text().replace('f"{item.name}@', 'f"v2 {item.name}@'))
        later = helpers.stat().st_mtime + 5
        os.utime(helpers, (later, later))
        client.execute_cell(nb.cells[run_cell], run_cell)
        assert "'async v2 ink@5 = 20'" in outputs_text(nb.cells[run_cell])


def test_notebook_of_a_task_named_like_its_variables(tmp_path: Path) -> None:
    _, ws = prepare(tmp_path, kind="jupyter", attr="run", inputs={"count": 41})
    assert ws.notebook is not None
    client, nb, _ = execute_notebook(ws.notebook)
    client.execute()
    assert outputs_text(nb.cells[run_cell_index(nb)]) == "42"


def test_notebook_in_an_absolute_directory_outside_the_workspace(tmp_path: Path) -> None:
    elsewhere = tmp_path / "home"
    _, ws = prepare(tmp_path, kind="jupyter", notebook_dir=elsewhere)
    assert ws.notebook == elsewhere / "loom_debug.ipynb"
    assert not any(g.endswith(".ipynb") for g in ws.generated)
    client, nb, _ = execute_notebook(ws.notebook)
    client.execute()
    assert "'pen@3 x4 = 24 (real)'" in outputs_text(nb.cells[run_cell_index(nb)])


# -- diff of the user's edits -------------------------------------------------------------------


def test_diff_shows_edits_additions_and_deletions_only(tmp_path: Path) -> None:
    bundle, ws = prepare(tmp_path)
    root = tmp_path / "ws"
    assert diff_workspace(bundle, root) == ""
    # the generated files, run output and caches are not edits
    assert run_entrypoint(ws.entrypoint, cwd=root).returncode == 0
    (root / ".ipynb_checkpoints").mkdir()
    (root / ".ipynb_checkpoints" / "x-checkpoint.py").write_text("x")
    (root / ".loom" / "inputs.json").write_text("{}")
    ws.entrypoint.write_text("# changed\n")
    assert diff_workspace(bundle, root) == ""

    helpers = root / "shop" / "helpers.py"
    helpers.write_text(helpers.read_text().replace("price: int", "price: float"))
    (root / "shop" / "extra.py").write_text("VALUE = 1")  # no newline at the end
    (root / "README.md").unlink()
    (root / "data.bin").write_bytes(b"\x00\xff\x00")
    diff = diff_workspace(bundle, root)

    assert "diff --git a/shop/helpers.py b/shop/helpers.py" in diff
    assert "-    price: int\n+    price: float\n" in diff
    assert "--- /dev/null\n+++ b/shop/extra.py\n" in diff
    assert "+VALUE = 1\n\\ No newline at end of file\n" in diff
    assert "--- a/README.md\n+++ /dev/null\n" in diff
    assert "-A shop.\n" in diff
    assert "Binary files /dev/null and b/data.bin differ" in diff
    for generated in ws.generated:
        assert generated not in diff
    assert "__pycache__" not in diff and "checkpoint" not in diff

    # the diff is a real patch: applied to the bundle it gives the workspace's text files
    target = tmp_path / "applied"
    shutil.copytree(bundle, target)
    patch = "".join("diff --git " + c for c in diff.split("diff --git ")[1:] if "data.bin" not in c)
    done = subprocess.run(
        ["git", "apply", "--unsafe-paths", "-"],
        input=patch,
        cwd=target,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert (target / "shop" / "helpers.py").read_text() == helpers.read_text()
    assert (target / "shop" / "extra.py").read_text() == "VALUE = 1"
    assert not (target / "README.md").exists()


def test_diff_without_a_manifest_still_skips_the_entrypoint(tmp_path: Path) -> None:
    bundle, ws = prepare(tmp_path)
    (ws.root / ".loom" / "workspace.json").unlink()
    assert diff_workspace(bundle, ws.root) == ""
