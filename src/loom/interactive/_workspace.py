"""The workspace of an interactive session: the user's code, the real inputs, generated helpers.

The workspace is a per-session copy of the code bundle, outside the user's source tree, plus a
few generated files: the task's inputs and the session's details under ``.loom/``, a debug
entrypoint that runs the task in-process with its real inputs, ``.vscode/`` launch
configurations and settings (VS Code), and a notebook (Jupyter). :func:`diff_workspace` shows
the user's edits against the bundle, leaving the generated files out.
"""

from __future__ import annotations

import difflib
import json
import keyword
import os
import shutil
import stat
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..remote._bundle import SKIP_DIRS, SKIP_SUFFIXES

Kind = Literal["vscode", "jupyter"]

#: Directories of the workspace that loom writes in full; never part of the user's edits.
GENERATED_DIRS = (".loom", ".vscode")
#: The preferred names of the generated entrypoint and notebook (another is chosen on a clash).
ENTRYPOINT_NAME = "loom_debug.py"
NOTEBOOK_NAME = "loom_debug.ipynb"
#: Where the workspace records what it generated (read by :func:`diff_workspace`).
MANIFEST = ".loom/workspace.json"
INPUTS = ".loom/inputs.json"
SESSION = ".loom/session.json"
LAUNCH = ".vscode/launch.json"
SETTINGS = ".vscode/settings.json"

LAUNCH_DEBUG = "Interactive Debugging"
LAUNCH_RESUME = "Resume Task"

# Names the generated notebook defines or uses.
_NOTEBOOK_NAMES = frozenset(
    {"json", "sys", "Path", "loom", "WORKSPACE", "real", "inputs", "run", "result", "resume"}
)
# Tool output that appears in a workspace while it is used; never an edit of the user's.
_IGNORED_DIRS = SKIP_DIRS | {".virtual_documents"}


@dataclass(frozen=True)
class Workspace:
    """Where everything of a prepared workspace is."""

    root: Path
    kind: Kind
    module: str
    attr: str
    python: str
    entrypoint: Path
    inputs: Path
    session: Path
    launch: Path | None
    settings: Path | None
    notebook: Path | None
    #: Every generated file inside ``root``, as a workspace-relative POSIX path.
    generated: tuple[str, ...]


def prepare_workspace(
    root: Path,
    bundle: Path,
    module: str,
    attr: str,
    inputs: Mapping[str, Any],
    *,
    python: str | os.PathLike[str],
    session: Mapping[str, Any],
    kind: Kind = "vscode",
    notebook_dir: str | os.PathLike[str] | None = None,
    debug_type: str = "loom-python",
) -> Workspace:
    """Build the workspace of an interactive session in ``root`` and describe it.

    ``root`` must be empty or absent and outside ``bundle`` (the extracted code bundle, copied
    in as the code the user edits). ``inputs`` are the task's wire-encoded inputs; ``python``
    is the interpreter that runs the task (used as given: a virtualenv's ``bin/python`` must
    not be resolved to the base interpreter); ``session`` is written to ``.loom/session.json``
    (mode 0600). ``notebook_dir`` (Jupyter) is relative to ``root`` or absolute, default
    ``root``. ``debug_type`` is the debugger of the launch configurations: ``"loom-python"``
    (loom's extension) or ``"debugpy"`` (Microsoft's Python extension).
    """
    if kind not in ("vscode", "jupyter"):
        raise ValueError(f"kind must be 'vscode' or 'jupyter', got {kind!r}")
    _check_dotted(module, "module")
    _check_dotted(attr, "attribute")
    if "." in attr:
        raise ValueError(f"the task attribute must be a plain name, got {attr!r}")
    root = Path(root).absolute()
    bundle = Path(bundle).absolute()
    if not bundle.is_dir():
        raise ValueError(f"the code bundle {bundle} is not a directory")
    if root == bundle or root.resolve().is_relative_to(bundle.resolve()):
        raise ValueError(f"the workspace {root} must be outside the code bundle {bundle}")
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"the workspace {root} already exists and is not empty")
    encoded = json.loads(json.dumps(dict(inputs)))  # a plain JSON copy; fails early if not JSON
    python = os.fspath(python)

    _copy_bundle(bundle, root)
    private = root / ".loom"
    private.mkdir(exist_ok=True)  # code bundles never hold .loom or .vscode; other trees might
    private.chmod(0o700)
    _write_private(root / SESSION, _json(dict(session)))
    _write_private(root / INPUTS, _json(encoded))

    generated = [SESSION, INPUTS, MANIFEST]
    entrypoint = _free_name(root, ENTRYPOINT_NAME)
    entrypoint.write_text(_entrypoint_source(entrypoint.name, module, attr, list(encoded)))
    generated.append(entrypoint.name)

    launch = settings = notebook = None
    if kind == "vscode":
        (root / ".vscode").mkdir(exist_ok=True)
        launch, settings = root / LAUNCH, root / SETTINGS
        launch.write_text(_json(_launch_config(entrypoint.name, python, debug_type)))
        settings.write_text(_json(_settings(python)))
        generated += [LAUNCH, SETTINGS]
    else:
        folder = root / (notebook_dir or ".")
        folder.mkdir(parents=True, exist_ok=True)
        notebook = _free_name(folder, NOTEBOOK_NAME)
        notebook.write_text(_json(_notebook(root, module, attr, list(encoded))))
        if notebook.absolute().is_relative_to(root):
            generated.append(notebook.absolute().relative_to(root).as_posix())

    workspace = Workspace(
        root=root,
        kind=kind,
        module=module,
        attr=attr,
        python=python,
        entrypoint=entrypoint,
        inputs=root / INPUTS,
        session=root / SESSION,
        launch=launch,
        settings=settings,
        notebook=notebook,
        generated=tuple(sorted(generated)),
    )
    manifest = {
        "kind": kind,
        "module": module,
        "attr": attr,
        "python": python,
        "entrypoint": entrypoint.name,
        "notebook": None if notebook is None else str(notebook),
        "generated": list(workspace.generated),
    }
    _write_private(root / MANIFEST, _json(manifest))
    return workspace


def diff_workspace(bundle: Path, workspace: Path) -> str:
    """A unified diff (``git apply``/``patch -p1`` format) of the user's edits to the workspace.

    Covers source files added, changed and deleted relative to ``bundle``. Files loom
    generated, caches (``__pycache__``, ``.ipynb_checkpoints``, ...) and anything the code
    bundle itself would never ship are left out. Empty when nothing was edited.
    """
    generated = _generated(workspace)
    before = {p: bundle / p for p in _source_files(bundle)}
    after = {p: workspace / p for p in _source_files(workspace) if p not in generated}
    chunks = []
    for rel in sorted(before.keys() | after.keys()):
        old, new = before.get(rel), after.get(rel)
        old_bytes = old.read_bytes() if old else None
        new_bytes = new.read_bytes() if new else None
        if old_bytes != new_bytes:
            chunks.append(_file_diff(rel, old_bytes, new_bytes))
    return "".join(chunks)


# -- copying and writing ------------------------------------------------------------------------


def _check_dotted(name: str, what: str) -> None:
    # The names are pasted into generated code: only identifiers may go there.
    parts = name.split(".")
    if not name or not all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
        raise ValueError(f"the task {what} {name!r} is not a dotted Python name")


def _copy_bundle(bundle: Path, root: Path) -> None:
    shutil.copytree(
        bundle,
        root,
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints"),
        dirs_exist_ok=True,
    )
    # The bundle cache may be read-only; the copy is there to be edited.
    for dirpath, _, filenames in os.walk(root):
        for name in [".", *filenames]:
            path = Path(dirpath, name)
            if not path.is_symlink():
                mode = path.stat().st_mode
                path.chmod(mode | stat.S_IWUSR | (stat.S_IXUSR if name == "." else 0))


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # the file may have existed with a wider mode
        f.write(text)


def _json(value: Any) -> str:
    return json.dumps(value, indent=2) + "\n"


def _free_name(folder: Path, preferred: str) -> Path:
    """``preferred`` in ``folder``, or ``stem_2.suffix``, ... when the user's code has it."""
    stem, suffix = os.path.splitext(preferred)
    candidate, n = folder / preferred, 1
    # A package directory of the same stem would also shadow (or be shadowed by) the script.
    while candidate.exists() or candidate.is_symlink() or (folder / candidate.stem).exists():
        n += 1
        candidate = folder / f"{stem}_{n}{suffix}"
    return candidate


# -- generated files ----------------------------------------------------------------------------


def _inputs_literal(names: list[str], source: str) -> str:
    if not names:
        return "inputs = {}"
    entries = "".join(f"    {json.dumps(n)}: {source}[{json.dumps(n)}],\n" for n in names)
    return f"inputs = {{\n{entries}}}"


def _entrypoint_source(script: str, module: str, attr: str, names: list[str]) -> str:
    header = f'''\
        """Run the task ``{module}.{attr}`` with the inputs its action received, in this process.

        Generated by loom for this interactive session. Start it under the debugger with the
        "{LAUNCH_DEBUG}" launch configuration (or run ``python {script}``), set breakpoints
        in the task's code, edit the code or the inputs below and run it again. Nothing this
        script does is recorded. When the code works, resume the task ("{LAUNCH_RESUME}", or
        ``python -m loom.interactive resume``): it runs again, for real, with the original
        inputs and your edited code.
        """

        import json
        import sys
        from pathlib import Path

        WORKSPACE = Path(__file__).resolve().parent
        # Import the task by its module name from the workspace, as the run did: packages and
        # their relative imports work.
        sys.path.insert(0, str(WORKSPACE))

        import loom  # noqa: E402
        from {module} import {attr} as task  # noqa: E402

        # The real inputs of the action. Replace a value with a literal to try another input.
        real = task.interface.decode_inputs(json.loads((WORKSPACE / "{INPUTS}").read_text()))
        '''
    footer = """

        def main() -> None:
            print(f"loom: running {task.name} with inputs:")
            for name, value in inputs.items():
                print(f"  {name} = {value!r}")
            # A local run: the task, and every task it calls, runs here, under the debugger.
            result = loom.with_runcontext(mode="local").run(task, **inputs).outputs()
            print(f"loom: {task.name} returned {result!r}")


        if __name__ == "__main__":
            main()
        """
    literal = _inputs_literal(names, "real")
    return textwrap.dedent(header) + literal + "\n" + textwrap.dedent(footer)


def _launch_config(entrypoint: str, python: str, debug_type: str) -> dict[str, Any]:
    common = {
        "type": debug_type,
        "request": "launch",
        "python": python,
        "cwd": "${workspaceFolder}",
        "console": "integratedTerminal",
    }
    return {
        "version": "0.2.0",
        "configurations": [
            {
                "name": LAUNCH_DEBUG,
                **common,
                "program": f"${{workspaceFolder}}/{entrypoint}",
                # Stop in loom's and libraries' frames too: a task's failure may start there.
                "justMyCode": False,
            },
            {
                "name": LAUNCH_RESUME,
                **common,
                "module": "loom.interactive",
                "args": ["resume"],
                "justMyCode": True,
            },
        ],
    }


def _settings(python: str) -> dict[str, Any]:
    bin_dir = os.path.dirname(python)
    return {
        "python.defaultInterpreterPath": python,
        # The terminal's `python` and `loom` are the task's own.
        "terminal.integrated.env.linux": {"PATH": f"{bin_dir}:${{env:PATH}}"},
        "python.terminal.activateEnvironment": False,
        # Resume re-imports the code from disk: unsaved edits would silently not count.
        "files.autoSave": "afterDelay",
        "files.autoSaveDelay": 500,
        "files.exclude": {
            ".loom": True,
            "**/__pycache__": True,
            "**/.ipynb_checkpoints": True,
        },
        "extensions.ignoreRecommendations": True,
        "workbench.startupEditor": "none",
        "debug.openDebug": "openOnDebugBreak",
        # nothing in a session phones out (no AI chat panel, no telemetry)
        "chat.disableAIFeatures": True,
        "telemetry.telemetryLevel": "off",
    }


def _notebook(root: Path, module: str, attr: str, names: list[str]) -> dict[str, Any]:
    # The task is imported under its own name, unless that would hide one the notebook uses.
    name, imported = attr, attr
    if attr in _NOTEBOOK_NAMES:
        name, imported = "task", f"{attr} as task"
    cells = [
        _markdown(
            f"""\
            # Debug `{module}.{attr}`

            This notebook runs the task with the inputs its action received, in this kernel.
            Edit the task's code in the workspace (`{root}`) or the inputs below and run the
            cells again: edited modules are reloaded. Nothing run here is recorded.

            When the code works, run the last cell: the task is resumed, runs again for real
            with the original inputs and your edited code, and this session ends.
            """
        ),
        _code(
            f"""\
            %load_ext autoreload
            %autoreload 2

            import json
            import sys
            from pathlib import Path

            import loom

            WORKSPACE = Path({json.dumps(str(root))})
            # Import the task by its module name from the workspace, as the run did.
            if str(WORKSPACE) not in sys.path:
                sys.path.insert(0, str(WORKSPACE))"""
        ),
        _code(
            f"""\
            from {module} import {imported}

            # The real inputs of the action. Replace a value with a literal to try another.
            real = {name}.interface.decode_inputs(
                json.loads((WORKSPACE / "{INPUTS}").read_text())
            )
            """,
            _inputs_literal(names, "real"),
            "inputs",
        ),
        _code(
            f"""\
            from {module} import {imported}  # again, so that your edits take effect

            # A local run in this kernel: the task and every task it calls. Jupyter's event loop
            # is running, so the run is awaited rather than started with loom.run().
            run = await loom.with_runcontext(mode="local").run_aio({name}, **inputs)
            result = run.outputs()
            result"""
        ),
        _markdown(
            """\
            ## Resume the task

            Runs the task for real with its original inputs and the code as it is now in the
            workspace. If the code fails to import or raises, the error is shown here and the
            session stays open.
            """
        ),
        _code(
            """\
            from loom.interactive import resume

            resume()"""
        ),
    ]
    for n, cell in enumerate(cells):
        cell["id"] = f"loom-{n}"
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _source_lines(text: str) -> list[str]:
    return textwrap.dedent(text).rstrip("\n").splitlines(keepends=True)


def _markdown(text: str) -> dict[str, Any]:
    return {"cell_type": "markdown", "metadata": {}, "source": _source_lines(text)}


def _code(*parts: str) -> dict[str, Any]:
    text = "\n".join(textwrap.dedent(part).rstrip("\n") for part in parts)
    return {
        "cell_type": "code",
        "metadata": {},
        "execution_count": None,
        "outputs": [],
        "source": _source_lines(text),
    }


# -- diffing ------------------------------------------------------------------------------------


def _generated(workspace: Path) -> set[str]:
    try:
        manifest = json.loads((workspace / MANIFEST).read_text())
    except (OSError, ValueError):  # not prepared by loom, or the manifest was deleted
        return {ENTRYPOINT_NAME, NOTEBOOK_NAME}
    return set(manifest.get("generated", []))


def _source_files(root: Path) -> Iterator[str]:
    """Workspace-relative paths of the files a code bundle of ``root`` would hold."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in _IGNORED_DIRS
            and not d.endswith(SKIP_SUFFIXES)
            and not (here / d / "pyvenv.cfg").exists()
        )
        for name in sorted(filenames):
            path = here / name
            if not name.endswith(SKIP_SUFFIXES) and not path.is_symlink():
                yield path.relative_to(root).as_posix()


def _file_diff(rel: str, old: bytes | None, new: bytes | None) -> str:
    header = f"diff --git a/{rel} b/{rel}\n"
    if old is None:
        header += "new file mode 100644\n"
    elif new is None:
        header += "deleted file mode 100644\n"
    try:
        old_text = "" if old is None else old.decode()
        new_text = "" if new is None else new.decode()
    except UnicodeDecodeError:
        return header + f"Binary files {_label('a', rel, old)} and {_label('b', rel, new)} differ\n"
    lines = difflib.unified_diff(
        old_text.splitlines(keepends=True),
        new_text.splitlines(keepends=True),
        _label("a", rel, old),
        _label("b", rel, new),
    )
    body = []
    for line in lines:
        body.append(line)
        if not line.endswith("\n"):  # the file's last line has no newline
            body.append("\n\\ No newline at end of file\n")
    return header + "".join(body)


def _label(side: str, rel: str, content: bytes | None) -> str:
    return "/dev/null" if content is None else f"{side}/{rel}"
