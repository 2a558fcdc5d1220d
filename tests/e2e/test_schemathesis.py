"""Property-based checks of the HTTP API against its own OpenAPI document (schemathesis), on a
real server with PostgreSQL: no request, however odd, gets a 5xx, and every status it answers
is one the document lists for that operation.

Bounded for CI: a few examples per operation (valid ones, invalid ones, and valid ones about a
run that exists), derandomized so that a run is reproducible; about two minutes in all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess, _drop_schema, start_server
from tests.server.conftest import make_bundle, run_create, task_spec

pytestmark = pytest.mark.e2e

#: Examples per operation and kind: enough to reach the odd corners of each schema, few
#: enough that some fifty operations take a minute or two.
VALID, INVALID, ABOUT_A_RUN = 60, 30, 50
#: Operations left out: the event stream never ends by itself (it is an SSE stream).
EXCLUDED_PATHS = ("/api/v1/events",)


@pytest.fixture
def pg_server(tmp_path: Path, loom_home: Path, postgres_url: str) -> Iterator[ServerProcess]:
    """A real server on a throwaway PostgreSQL schema."""
    import psycopg

    schema = "st_" + os.urandom(4).hex()
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{postgres_url}?options=-csearch_path%3D{schema}"
    server = start_server(tmp_path / "data", home=loom_home, env={"LOOM_DATABASE_URL": url})
    try:
        yield server
    finally:
        server.stop()
        _drop_schema(plain, schema)


def _ended_run(server: ServerProcess) -> str:
    """A run that exists and has ended (its task is not in the bundle: it fails), so that
    examples about it reach past the 404 of a made-up name without waiting on anything."""
    with httpx.Client(base_url=server.endpoint, headers=server.headers, timeout=30) as http:
        digest, data = make_bundle()
        http.put(f"/api/v1/bundles/{digest}", content=data).raise_for_status()
        created = http.post("/api/v1/runs", json=run_create(digest, task=task_spec()))
        created.raise_for_status()
        name: str = created.json()["name"]
        deadline = time.monotonic() + 60
        while http.get(f"/api/v1/runs/{name}").json()["phase"] not in ("FAILED", "SUCCEEDED"):
            assert time.monotonic() < deadline, "the seeded run did not end"
            time.sleep(0.2)
    return name


#: The longest wait a long-poll may be asked for here (``timeout``, in a query or a body):
#: their own limit is 30 s, and a few such waits would take the run's whole budget.
SHORT_WAIT_S = 0.2


def _short_waits(case: Any) -> None:
    """Ask long-polls to wait :data:`SHORT_WAIT_S` at most, also when the example leaves the
    ``timeout`` to its default (what they answer is the same; an invalid one stays)."""
    in_query = any(p.name == "timeout" for p in case.operation.query)
    in_body = case.operation.path.endswith("actions:wait")  # (ActionsWait.timeout)
    for where, waits in (("query", in_query), ("body", in_body)):
        values = getattr(case, where)
        if waits and (values is None or isinstance(values, dict)):
            timeout = (values or {}).get("timeout", SHORT_WAIT_S)
            if isinstance(timeout, (int, float)):
                setattr(case, where, {**(values or {}), "timeout": min(timeout, SHORT_WAIT_S)})


def test_no_request_gets_a_server_error_or_an_undocumented_status(
    pg_server: ServerProcess,
) -> None:
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.errors import FailureGroup
    from schemathesis.specs.openapi.checks import status_code_conformance

    server = pg_server
    run = _ended_run(server)
    schema = schemathesis.openapi.from_url(
        f"{server.endpoint}/api/v1/openapi.json", headers=server.headers, timeout=30
    )
    failures: dict[tuple[str, str], str] = {}  # (operation, what failed) -> how to reproduce
    calls = 0

    def exercise(operation: Any, strategy: Any, examples: int) -> None:
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: report, don't minimise
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def check(case: Any) -> None:
            nonlocal calls
            calls += 1
            _short_waits(case)
            response = case.call(base_url=server.endpoint, headers=server.headers, timeout=60)
            try:
                case.validate_response(
                    response,
                    checks=[not_a_server_error, status_code_conformance],
                    headers=server.headers,
                )
            except (FailureGroup, AssertionError) as e:  # every failure, not just the first
                for failure in getattr(e, "exceptions", [e]):
                    what = f"{response.status_code}: {str(failure).strip().splitlines()[0]}"
                    failures.setdefault(
                        (operation.label, what), case.as_curl_command(base_url=server.endpoint)
                    )

        try:
            check()
        except Unsatisfiable:  # nothing to make invalid (an operation without parameters)
            pass

    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.startswith(EXCLUDED_PATHS):
            continue
        exercise(operation, operation.as_strategy(), VALID)
        exercise(
            operation,
            operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE),
            INVALID,
        )
        named = {p: v for p, v in (("run", run), ("action", "a0")) if f"{{{p}}}" in operation.path}
        if named:
            exercise(operation, operation.as_strategy(path_parameters=named), ABOUT_A_RUN)
    elapsed = time.monotonic() - started
    print(f"schemathesis: {calls} requests in {elapsed:.0f} s")
    assert calls > 500  # it did exercise the API
    assert not failures, "\n\n".join(
        f"{op} -> {what}\n{curl}" for (op, what), curl in failures.items()
    )
