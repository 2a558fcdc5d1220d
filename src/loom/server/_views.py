"""Read models for the web UI: a page of runs, a run with its actions, one action in detail.

Reads only. Pages of runs are queried here (with offset, a text filter and a total, which the
run service's list does not do); everything else comes from the run service's public methods,
so the UI sees exactly what the API says.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from sqlalchemy import func, select

from .. import wire
from ..wire import Phase, value_kind
from ._data import DataRef, parse_data_uri
from ._db import Database
from ._environments import Environments
from ._errors import BadRequestError, ConflictError, NotFoundError
from ._models import Action, Project, Run
from ._runs import RunService, run_info
from ._state import ROOT_ACTION

#: Most task names offered as a filter on the runs page.
MAX_TASK_NAMES = 500


class ViewService:
    """The UI's queries; a thin layer over the database and the run service."""

    def __init__(self, db: Database, runs: RunService, environments: Environments) -> None:
        self._db = db
        self._runs = runs
        self._environments = environments

    # -- the runs page --------------------------------------------------------------------

    def run_page(
        self,
        *,
        project: str | None = None,
        domain: str | None = None,
        phase: str | None = None,
        task: str | None = None,
        q: str | None = None,
        offset: int = 0,
        limit: int = 50,
        projects: frozenset[str] | None = None,
    ) -> wire.RunPage:
        """Runs matching every filter given, newest first, ``limit`` from ``offset``; only
        runs of ``projects`` if given."""
        if phase is not None and phase not in _PHASES:
            raise BadRequestError(f"unknown phase {phase!r}; phases are {', '.join(_PHASES)}")
        scope = select(Run.id).join(Project, Project.id == Run.project_id)
        if project:
            scope = scope.where(Project.name == project)
        if projects is not None:
            scope = scope.where(Project.name.in_(projects))
        if domain:
            scope = scope.where(Run.domain == domain)
        filtered = scope
        if phase:
            filtered = filtered.where(Run.phase == phase)
        if task:
            filtered = filtered.where(Run.task == task)
        if q and q.strip():
            text = q.strip()
            filtered = filtered.where(
                Run.name.icontains(text, autoescape=True)
                | Run.task.icontains(text, autoescape=True)
            )
        with self._db.read() as s:
            if project and s.scalar(select(Project.id).where(Project.name == project)) is None:
                raise NotFoundError(f"project {project!r} not found")
            total = s.scalar(select(func.count()).select_from(filtered.subquery())) or 0
            rows = s.execute(
                select(Run, Project.name)
                .join(Project, Project.id == Run.project_id)
                .where(Run.id.in_(filtered.scalar_subquery()))
                .order_by(Run.created_at.desc(), Run.id.desc())
                .offset(offset)
                .limit(limit)
            ).all()
            ids = [run.id for run, _ in rows]
            counts: dict[int, int] = {}
            if ids:
                counts = {
                    int(run_id): int(n)
                    for run_id, n in s.execute(
                        select(Action.run_id, func.count())
                        .where(Action.run_id.in_(ids))
                        .group_by(Action.run_id)
                    )
                }
            tasks = list(
                s.scalars(
                    select(Run.task)
                    .where(Run.id.in_(scope.scalar_subquery()))
                    .group_by(Run.task)
                    .order_by(Run.task)
                    .limit(MAX_TASK_NAMES)
                )
            )
            runs = [run_info(run, name, counts.get(run.id, 0)) for run, name in rows]
        return wire.RunPage(runs=runs, total=total, offset=offset, limit=limit, tasks=tasks)

    # -- the run page ---------------------------------------------------------------------

    def run_view(self, run: str) -> wire.RunView:
        """The run and every action; the event ``seq`` is read first, so following events
        after it misses no change made while the actions were read.

        The actions are what ``GET /runs/{run}/actions`` answers (a test holds them equal),
        read column by column and built without re-validation: the page of a run with
        thousands of actions waits for this, and the ORM objects and validation took most of
        the time."""
        seq = self._runs.last_event_seq()
        with self._db.read() as s:
            found = s.execute(
                select(Run, Project.name)
                .join(Project, Project.id == Run.project_id)
                .where(Run.name == run)
            ).first()
            if found is None:
                raise NotFoundError(f"run {run!r} not found")
            row, project = found
            actions = self._runs.action_infos(s, row.id, row.name)
        info = run_info(row, project, len(actions))
        return wire.RunView.model_construct(run=info, actions=actions, seq=seq)

    def action_detail(self, run: str, action: str) -> wire.ActionDetail:
        info = self._runs.get_action(run, action)
        spec = self._runs.get_spec(run, action)
        original = self._runs.get_run(run)
        inputs = _value_view(json.dumps(spec.inputs, separators=(",", ":")).encode())
        outputs = None
        if info.phase == Phase.SUCCEEDED:
            try:
                outputs = _value_view(self._runs.outputs_json(run, action), wrapped=True)
            except ConflictError:  # ended in between: none to show
                outputs = None
        rerun, note = rerun_command(original, spec)
        return wire.ActionDetail(
            action=info,
            task=spec.task,
            inputs=inputs,
            outputs=outputs,
            rerun=rerun,
            rerun_note=note,
            debug=debug_command(run, action, spec.task),
            environment=(
                None if spec.task.image is None else self._environments.view(spec.task.image)
            ),
        )

    def file_path(self, run: str, action: str, of: str, path: str) -> DataRef:
        """The object-store data that a ``File``/``Dir`` in the action's inputs or outputs
        refers to (a ``loom://data/`` reference); 404 unless the values refer to exactly
        ``path``. Never a file of the server's machine: a value names what it likes."""
        if of == "inputs":
            value: Any = self._runs.get_spec(run, action).inputs
        elif of == "outputs":
            value = json.loads(self._runs.outputs_json(run, action))["value"]
        else:
            raise BadRequestError(f"'of' must be 'inputs' or 'outputs', got {of!r}")
        if path not in set(file_refs(value)):
            raise NotFoundError(
                f"the {of} of action {action!r} of run {run!r} refer to no file {path!r}"
            )
        ref = parse_data_uri(path) if path.startswith(wire.DATA_URI_PREFIX) else None
        if ref is None:
            raise NotFoundError(
                f"{path!r} is not in the server's object store (a file of the machine that "
                "made the value): only loom://data/ references can be downloaded"
            )
        return ref

    def debug_run(
        self, run: str, action: str, kind: wire.SessionKind, created_by: str
    ) -> wire.RunInfo:
        """A new run of the action's bundle, task and inputs, opened as an interactive
        session of ``kind`` and never served from the cache (as ``loom debug`` does)."""
        original = self._runs.get_run(run)
        spec = self._runs.get_spec(run, action)
        interactive = (spec.task.interactive or wire.InteractiveSpec()).model_copy(
            update={"kind": kind, "run_task_first": False}
        )
        task = spec.task.model_copy(update={"interactive": interactive, "cache": None})
        body = wire.RunCreate(
            project=original.project,
            domain=original.domain,
            bundle=spec.bundle,
            root=wire.ActionCreate(name=ROOT_ACTION, task=task, inputs=spec.inputs),
            env_vars=spec.env_vars,
        )
        return self._runs.create_run(body, created_by=created_by)


_PHASES: tuple[str, ...] = tuple(Phase)


def _error(data: dict[str, Any] | None) -> wire.ErrorInfo | None:
    return None if data is None else wire.ErrorInfo.model_validate(data)


def _value_view(data: bytes, *, wrapped: bool = False) -> wire.ValueView:
    """``data`` is encoded JSON (``wrapped``: of ``wire.Outputs``, ``{"value": ...}``)."""
    size = len(data) - (len(b'{"value":}') if wrapped else 0)
    if size > wire.VIEW_VALUE_BYTES:
        return wire.ValueView(size=size, truncated=True)
    value = json.loads(data)
    return wire.ValueView(value=value["value"] if wrapped else value, size=size)


def _is_file_ref(value: Any) -> bool:
    """Whether an encoded value is a ``File`` or ``Dir``: by its type tag, never its shape."""
    return value_kind(value) in _REF_KINDS and isinstance(value.get("path"), str)


_REF_KINDS = (wire.ValueKind.FILE, wire.ValueKind.DIR)


def file_refs(value: Any) -> list[str]:
    """The paths of every ``File``/``Dir`` reference in an encoded value."""
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if _is_file_ref(item):
            found.append(item["path"])
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def rerun_command(run: wire.RunInfo, spec: wire.ActionSpec) -> tuple[str, str]:
    """A ``loom run --remote`` command line that runs ``spec``'s task again with its inputs,
    and a note on what it cannot express (empty if nothing).

    The file is the task's module as a path under the code bundle's root (run it from
    there). Inputs become ``--kebab-case`` options: scalars as they are, booleans as
    ``--flag``/``--no-flag``, files by their path, anything else as JSON, like the CLI
    reads them. Pickled values have no command-line form.
    """
    module = spec.task.module
    path = "__main__.py" if module == "__main__" else module.replace(".", "/") + ".py"
    words = ["loom", "run", "--remote", "--project", run.project, "--domain", run.domain]
    for key, value in sorted(spec.env_vars.items()):
        words += ["--env", f"{key}={value}"]
    words += [path, spec.task.attr]
    skipped: list[str] = []
    for name, value in spec.inputs.items():
        flag = "--" + name.replace("_", "-")
        if value is None:
            continue  # the option's default (None) is what it had
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, str | int | float):
            words += [flag, str(value)]
        elif _is_file_ref(value):
            words += [flag, value["path"]]
        elif _has_pickle(value):
            skipped.append(name)
        else:
            words += [flag, json.dumps(value, separators=(",", ":"), ensure_ascii=False)]
    note = ""
    if skipped:
        note = (
            f"input(s) {', '.join(skipped)} are pickled Python objects with no command-line "
            "form: pass them from Python, or debug this action instead"
        )
    return shlex.join(words), note


def _has_pickle(value: Any) -> bool:
    if isinstance(value, dict):
        return value_kind(value) is wire.ValueKind.PICKLE or any(
            _has_pickle(v) for v in value.values()
        )
    if isinstance(value, list):
        return any(_has_pickle(v) for v in value)
    return False


def debug_command(run: str, action: str, task: wire.TaskSpec) -> str:
    """``loom debug RUN ACTION``: the interactive re-run (in JupyterLab for a Jupyter task)."""
    words = ["loom", "debug", run, action]
    if task.interactive is not None and task.interactive.kind == "jupyter":
        words.append("--jupyter")
    return shlex.join(words)
