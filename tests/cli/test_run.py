"""``loom run`` end to end, through the real executable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import loom
from tests.conftest import REPO, run_cli, write_module

pytestmark = pytest.mark.e2e

FLOW = """
import dataclasses
import enum
import datetime as dt
from typing import Optional

import loom
from loom.io import File

env = loom.TaskEnvironment("cli")


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Box:
    width: int
    height: int


@env.task
async def area(box: Box, scale: float = 1.0) -> float:
    \"\"\"Area of a box, scaled.\"\"\"
    return box.width * box.height * scale


@env.task
def describe(
    count: int,
    name: str = "thing",
    colour: Colour = Colour.RED,
    tags: list[str] = [],
    when: dt.date = dt.date(2026, 1, 1),
    loud: bool = False,
    note: Optional[str] = None,
    mapping: dict[str, int] = {},
) -> str:
    text = f"{count} {colour.value} {name}(s) {tags} {when.isoformat()} {note} {mapping}"
    return text.upper() if loud else text


@env.task
def word_count(doc: File) -> int:
    with doc.open("r") as f:
        return len(f.read().split())


@env.task
async def fails(message: str) -> int:
    return await inner_fail(message)


@env.task
async def inner_fail(message: str) -> int:
    raise ValueError(message)
"""


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    return write_module(tmp_path / "flow.py", FLOW)


def test_run_prints_the_result(flow: Path) -> None:
    r = run_cli("run", str(flow), "area", "--box", '{"width": 2, "height": 3}', "--scale", "1.5")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "9.0"
    assert "succeeded" in r.stderr


def test_arguments_are_parsed_from_annotations(flow: Path) -> None:
    r = run_cli(
        "run", str(flow), "describe", "--count", "3", "--colour", "blue", "--tags", '["a","b"]',
        "--when", "2026-11-22", "--loud", "--note", "hi", "--mapping", '{"k": 1}',
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "3 BLUE THING(S) ['A', 'B'] 2026-11-22 HI {'K': 1}"


def test_defaults_are_respected(flow: Path) -> None:
    r = run_cli("run", str(flow), "describe", "--count", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1 red thing(s) [] 2026-01-01 None {}"


def test_file_arguments_take_paths(flow: Path, tmp_path: Path) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text("one two three")
    r = run_cli("run", str(flow), "word-count", "--doc", str(doc))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "3"
    r = run_cli("run", str(flow), "word_count", "--doc", str(tmp_path / "missing.txt"))
    assert r.returncode == 2 and "is not an existing file" in r.stderr


def test_output_json(flow: Path) -> None:
    r = run_cli("run", "--output", "json", str(flow), "area", "--box", '{"width": 1, "height": 2}')
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["outputs"] == 2.0 and doc["phase"] == "SUCCEEDED" and doc["task"] == "cli.area"
    r = run_cli("run", "-o", "json", str(flow), "fails", "--message", "boom")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["phase"] == "FAILED" and doc["error"]["type"] == "ValueError"
    assert doc["error"]["message"] == "boom"


def test_failure_exits_non_zero_with_a_user_traceback(flow: Path) -> None:
    r = run_cli("run", str(flow), "fails", "--message", "kaput")
    assert r.returncode == 1
    assert "Traceback (most recent call last)" in r.stderr
    assert 'flow.py", line' in r.stderr and "in inner_fail" in r.stderr
    assert "ValueError: kaput" in r.stderr
    assert "/loom/" not in r.stderr.split("Traceback")[1].split("ValueError")[0], (
        "loom's own frames must be trimmed"
    )


def test_task_help_shows_inputs_types_defaults_and_docstring(flow: Path) -> None:
    r = run_cli("run", str(flow), "area", "--help")
    assert r.returncode == 0
    assert "Area of a box, scaled." in r.stdout
    assert "--box" in r.stdout and "Box" in r.stdout and "[required]" in r.stdout
    assert "--scale" in r.stdout and "default: 1.0" in r.stdout
    r = run_cli("run", str(flow), "describe", "--help")
    assert "--loud / --no-loud" in r.stdout and "Colour (red, blue)" in r.stdout


def test_listing_the_tasks_of_a_file(flow: Path) -> None:
    r = run_cli("run", str(flow))
    assert r.returncode == 0, r.stderr
    for name in ("area", "describe", "word_count", "fails", "inner_fail"):
        assert name in r.stdout
    assert "(box: Box, scale: float) -> float" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nowhere.py", "main"], "file not found: nowhere.py"),
        (["run", "{flow}", "nope"], "no task named 'nope'"),
        (["run", "{flow}", "area"], "Missing option '--box'"),
        (["run", "{flow}", "describe", "--count", "many"], "'many' is not a valid integer"),
        (["run", "{flow}", "area", "--box", "{{bad json"], "expected JSON for Box"),
        (["run", "{flow}", "area", "--box", '{{"depth": 1}}'], "has no field(s) ['depth']"),
        (["run", "{flow}", "describe", "--count", "1", "--colour", "green"], "not a valid Colour"),
        (["run", "{flow}", "area", "--bogus", "1"], "No such option"),
    ],
)
def test_bad_input_gets_a_clear_message(flow: Path, args: list[str], message: str) -> None:
    r = run_cli(*[a.format(flow=flow) for a in args])
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_task_lists_the_known_ones(flow: Path) -> None:
    r = run_cli("run", str(flow), "aera")
    assert "tasks in this file: area, describe, fails, inner_fail, word_count" in r.stderr


def test_syntax_errors_point_at_the_line(tmp_path: Path) -> None:
    bad = write_module(tmp_path / "bad.py", "import loom\n\ndef broken(:\n    pass\n")
    r = run_cli("run", str(bad), "broken")
    assert r.returncode == 1
    assert f"syntax error in {bad}:3" in r.stderr and "def broken(:" in r.stderr


def test_import_errors_are_reported(tmp_path: Path) -> None:
    bad = write_module(tmp_path / "bad_import.py", "import not_a_module_xyz\n")
    r = run_cli("run", str(bad), "x")
    assert r.returncode == 1
    assert "ModuleNotFoundError: No module named 'not_a_module_xyz'" in r.stderr


def test_tasks_in_packages_with_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "proj" / "pipelines"
    pkg.mkdir(parents=True)
    (tmp_path / "proj" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    write_module(pkg / "helpers.py", "def shout(s: str) -> str:\n    return s.upper()\n")
    write_module(
        pkg / "flow.py",
        """
        import loom
        from .helpers import shout

        env = loom.TaskEnvironment("pkg")

        @env.task
        async def main(word: str) -> str:
            return shout(word)
        """,
    )
    r = run_cli("run", str(pkg / "flow.py"), "main", "--word", "hi")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "HI"


def test_run_options(flow: Path) -> None:
    r = run_cli("run", "--name", "cli-named", "-o", "json", str(flow), "describe", "--count", "1")
    assert json.loads(r.stdout)["run"] == "cli-named"
    r = run_cli("run", "--env", "NOEQUALS", str(flow), "describe", "--count", "1")
    assert r.returncode == 2 and "expected KEY=VALUE" in r.stderr


def test_version_and_help() -> None:
    r = run_cli("--version")
    assert r.returncode == 0 and loom.__version__ in r.stdout
    r = run_cli("run", "--help")
    assert r.returncode == 0 and "list the tasks in FILE" in r.stdout


@pytest.mark.parametrize("remote", [[], ["--remote"]])
@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("[1,2]", "expected a str, got number 1"),
        ('{"a": 1}', "expected a JSON array, got object"),
        ("[null]", "expected a str, got null"),
    ],
)
def test_json_inputs_of_the_wrong_shape_are_refused_not_converted(
    remote: list[str], given: str, said: str
) -> None:
    # they ran as "Hello, 1!", the object's keys and "Hello, None!"
    r = run_cli("run", *remote, str(REPO / "examples" / "hello.py"), "main", "--names", given)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Invalid value for '--names'" in r.stderr and said in r.stderr
    assert "Hello" not in r.stdout
