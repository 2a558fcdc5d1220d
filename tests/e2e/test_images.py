"""Task images on a real server: each image's Python environment is built with uv, cached,
and the image's tasks run in it (plain and warm), while the server's interpreter stays as it
was; images that need a container are refused when submitted."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess, remote_run, run_actions, run_cli, write_module

pytestmark = pytest.mark.e2e

# a small pure-Python package that loom's own environment does not have, in two versions
PACKAGE = "cowsay"

FLOW = """
import asyncio
import importlib.metadata
import os
import sys

import loom

new = loom.TaskEnvironment(
    "new", image=loom.Image.from_debian_base().with_pip_packages("cowsay==6.1")
)
old = loom.TaskEnvironment(
    "old",
    image=loom.Image.from_debian_base()
    .with_pip_packages("cowsay==6.0")
    .with_env_vars({"IMAGE_SAYS": "old"}),
)
warm = loom.TaskEnvironment(
    "warm",
    image=loom.Image.from_debian_base().with_pip_packages("cowsay==6.1"),
    reusable=loom.ReusePolicy(replicas=1, concurrency=10, idle_ttl=30),
)
plain = loom.TaskEnvironment("plain", depends_on=[new, old, warm])


def _where() -> dict[str, str]:
    import cowsay

    return {
        "version": importlib.metadata.version("cowsay"),
        "python": sys.executable,
        "says": os.environ.get("IMAGE_SAYS", ""),
        "talks": cowsay.get_output_string("cow", "hi").splitlines()[1].strip(),
    }


@new.task
async def in_new() -> dict[str, str]:
    return _where()


@old.task
async def in_old() -> dict[str, str]:
    return _where()


@warm.task
async def in_warm(i: int) -> str:
    return importlib.metadata.version("cowsay") + " " + sys.executable


@plain.task
async def side_by_side() -> dict[str, dict[str, str]]:
    try:
        import cowsay  # noqa: F401

        root = "has cowsay"
    except ImportError:
        root = "no cowsay"
    new_one, old_one = await asyncio.gather(in_new(), in_old())
    return {"root": {"cowsay": root}, "new": new_one, "old": old_one}


@plain.task
async def many_warm(n: int) -> list[str]:
    return list(await asyncio.gather(*(in_warm(i) for i in range(n))))
"""


def test_an_images_packages_are_importable_remotely_and_versions_live_side_by_side(
    server: ServerProcess, tmp_path: Path
) -> None:
    # (before: every action ran in the server's interpreter: ModuleNotFoundError)
    assert importlib.util.find_spec(PACKAGE) is None  # the server's environment lacks it
    flow = write_module(tmp_path / "flow.py", FLOW)
    done = remote_run(server, str(flow), "side_by_side")
    assert done["phase"] == "SUCCEEDED", done
    out = done["outputs"]
    # the root has no image: it runs in the runtime's own environment
    assert out["root"] == {"cowsay": "no cowsay"}
    assert out["new"]["version"] == "6.1" and out["old"]["version"] == "6.0"
    assert out["new"]["talks"] and out["old"]["says"] == "old" and out["new"]["says"] == ""
    environments = server.data_dir / "environments"
    new_python, old_python = Path(out["new"]["python"]), Path(out["old"]["python"])
    assert new_python.parent.parent.parent == environments
    assert old_python.parent.parent.parent == environments and old_python != new_python
    assert importlib.util.find_spec(PACKAGE) is None  # and still lacks it
    # built once: the next run uses them as they are
    built = sorted(p.name for p in environments.iterdir() if p.is_dir())
    again = remote_run(server, str(flow), "side_by_side")
    assert again["phase"] == "SUCCEEDED" and again["outputs"]["new"] == out["new"]
    assert sorted(p.name for p in environments.iterdir() if p.is_dir()) == built


def test_concurrent_actions_of_a_new_image_share_one_build_and_warm_workers_use_it(
    server: ServerProcess, tmp_path: Path
) -> None:
    flow = write_module(tmp_path / "flow.py", FLOW)
    done = remote_run(server, str(flow), "many_warm", "--n", "20")
    assert done["phase"] == "SUCCEEDED", done
    versions = {line.split(" ", 1)[0] for line in done["outputs"]}
    pythons = {line.split(" ", 1)[1] for line in done["outputs"]}
    assert versions == {"6.1"} and len(pythons) == 1
    (log,) = (server.data_dir / "environments").glob("*.log")
    assert log.read_text().count("building environment") == 1


UV_SCRIPT = """
# /// script
# requires-python = ">=3.10"
# dependencies = ["cowsay==6.1"]
# ///
import importlib.metadata
from pathlib import Path
from typing import Any

import loom

scripted = loom.TaskEnvironment(
    "scripted", image=loom.Image.from_uv_script(__file__, name="scripted")
)
listed = loom.TaskEnvironment(
    "listed",
    image=loom.Image.from_debian_base().with_requirements(
        str(Path(__file__).with_name("requirements.txt"))
    ),
)
locked = loom.TaskEnvironment(
    "locked",
    image=loom.Image.from_debian_base().with_uv_project(
        Path(__file__).with_name("project") / "pyproject.toml"
    ),
)
main_env = loom.TaskEnvironment("main", depends_on=[scripted, listed, locked])


@scripted.task
async def from_script() -> str:
    return importlib.metadata.version("cowsay")


@listed.task
async def from_requirements() -> str:
    return importlib.metadata.version("cowsay")


@locked.task
async def from_lock() -> str:
    return importlib.metadata.version("cowsay")


@main_env.task
async def main() -> list[str]:
    return [await from_script(), await from_requirements(), await from_lock()]
"""


def test_uv_scripts_and_requirement_files_make_environments(
    server: ServerProcess, tmp_path: Path
) -> None:
    (tmp_path / "requirements.txt").write_text("# pinned\ncowsay==6.0  # the older one\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0.1"\nrequires-python = ">=3.10"\n'
        'dependencies = ["cowsay<6.1"]\n'
    )
    from uv import find_uv_bin

    locking = subprocess.run(
        [find_uv_bin(), "lock", "--quiet"], cwd=project, capture_output=True, text=True
    )
    assert locking.returncode == 0, locking.stderr
    assert 'name = "cowsay"\nversion = "6.0"' in (project / "uv.lock").read_text()
    flow = write_module(tmp_path / "flow.py", UV_SCRIPT)
    done = remote_run(server, str(flow), "main")
    assert done["phase"] == "SUCCEEDED", done
    assert done["outputs"] == ["6.1", "6.0", "6.0"]


BROKEN = """
import loom

broken = loom.TaskEnvironment(
    "broken",
    image=loom.Image.from_debian_base().with_pip_packages("loom-no-such-package-anywhere==1.0"),
)
boxed = loom.TaskEnvironment(
    "boxed", image=loom.Image.from_debian_base().with_apt_packages("ffmpeg")
)
main_env = loom.TaskEnvironment("main", depends_on=[broken, boxed])


@broken.task(retries=3)
async def needs_missing() -> int:
    return 1


@boxed.task
async def needs_apt() -> int:
    return 1


@main_env.task
async def main() -> list[str]:
    import asyncio

    seen = []
    for call in (needs_missing, needs_apt):
        try:
            await call()
        except Exception as e:
            seen.append(f"{type(e).__name__}: {e}")
    # three more at once: they fail with the same build's error, not a build each
    again = await asyncio.gather(*(needs_missing() for _ in range(3)), return_exceptions=True)
    seen.extend(type(e).__name__ for e in again)
    return seen
"""


def test_a_failed_build_fails_fast_with_uvs_message_and_container_images_are_refused(
    server: ServerProcess, tmp_path: Path
) -> None:
    flow = write_module(tmp_path / "flow.py", BROKEN)
    done = remote_run(server, str(flow), "main")
    assert done["phase"] == "SUCCEEDED", done
    missing, apt, *again = done["outputs"]
    assert len(again) == 3 and all(e.endswith("Error") for e in again), again
    (log,) = (server.data_dir / "environments").glob("*.log")
    assert log.read_text().count("building environment") == 1
    assert "building the image's environment failed" in missing
    assert "loom-no-such-package-anywhere" in missing  # uv's own words name it
    assert "needs a container for with_apt_packages('ffmpeg')" in apt
    actions = {a["task"]: a for a in run_actions(server, done["run"])}
    # a system error: the task's retries do not build it again
    assert len(actions["broken.needs_missing"]["attempts"]) == 1
    # refused when submitted: it never had an attempt
    assert actions["boxed.needs_apt"]["attempts"] == []
    assert actions["boxed.needs_apt"]["phase"] == "FAILED"
    assert json.dumps(actions["boxed.needs_apt"]).count("ImageNotSupportedError") >= 1


def test_image_build_get_and_delete_from_the_cli(server: ServerProcess, tmp_path: Path) -> None:
    flow = write_module(tmp_path / "flow.py", FLOW)
    built = run_cli("image", "build", str(flow), "new", "plain", "-o", "json", env=server.env)
    assert built.returncode == 0, built.stderr
    new, plain = json.loads(built.stdout)
    assert new["environment"] == "new" and new["packages"] == ["cowsay==6.1"]
    assert new["size_bytes"] > 1_000_000 and len(new["key"]) == 32
    assert plain == {"environment": "plain", "key": None}  # nothing to build
    # built ahead of time: the run builds nothing more
    done = remote_run(server, str(flow), "in_new")
    assert done["phase"] == "SUCCEEDED" and done["outputs"]["version"] == "6.1"
    log = server.data_dir / "environments" / f"{new['key']}.log"
    assert log.read_text().count("building environment") == 1
    listed = run_cli("get", "image", "-o", "json", env=server.env)
    assert listed.returncode == 0, listed.stderr
    (shown,) = json.loads(listed.stdout)
    assert shown["key"] == new["key"] and shown["last_used_at"] is not None
    table = run_cli("get", "image", env=server.env)
    assert new["key"] in table.stdout and "cowsay==6.1" in table.stdout
    unknown = run_cli("image", "build", str(flow), "nope", env=server.env)
    assert unknown.returncode == 1 and "has no task environment 'nope'" in unknown.stderr
    deleted = run_cli("delete", "image", new["key"], env=server.env)
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(run_cli("get", "image", "-o", "json", env=server.env).stdout) == []
    again = run_cli("delete", "image", new["key"], env=server.env)
    assert again.returncode == 1 and "loom get image" in again.stderr
    # the next action that needs it builds it again
    assert remote_run(server, str(flow), "in_new")["outputs"]["version"] == "6.1"
    # pruning by age: just used, it stays; unused for no time at all, it goes
    kept = run_cli("delete", "image", "--unused-for", "1d", "-o", "json", env=server.env)
    assert kept.returncode == 0 and json.loads(kept.stdout) == [], kept.stderr
    pruned = run_cli("delete", "image", "--unused-for", "0s", "-o", "json", env=server.env)
    assert pruned.returncode == 0, pruned.stderr
    assert [i["key"] for i in json.loads(pruned.stdout)] == [new["key"]]
    assert json.loads(run_cli("get", "image", "-o", "json", env=server.env).stdout) == []
    vague = run_cli("delete", "image", "--unused-for", "soon", env=server.env)
    assert vague.returncode == 2 and "Invalid value for --unused-for: 'soon'" in vague.stderr
    both = run_cli("delete", "image", new["key"], "--unused-for", "1d", env=server.env)
    assert both.returncode == 2 and "KEY" in both.stderr


SESSION = """
import loom
from loom.interactive import vscode

env = loom.TaskEnvironment(
    "imaged", image=loom.Image.from_debian_base().with_pip_packages("cowsay==6.1")
)


@vscode(max_idle_seconds=120)
@env.task
async def look() -> str:
    import cowsay

    return cowsay.__name__
"""


def test_a_session_of_a_task_with_an_image_runs_in_its_environment(
    ide_server: ServerProcess, tmp_path: Path
) -> None:
    from tests.e2e.test_interactive import (
        assert_no_processes_left,
        cli,
        start,
        wait_for,
        wait_ready,
    )

    (tmp_path / "marks").mkdir()
    code = tmp_path / "code"
    code.mkdir()
    run = start(ide_server, tmp_path, write_module(code / "flow.py", SESSION), "look")
    session = wait_ready(ide_server, run)["session"]
    workspace = Path(session["workspace"])
    settings = json.loads((workspace / ".vscode" / "settings.json").read_text())
    python = Path(settings["python.defaultInterpreterPath"])
    assert python.parent.parent.parent == ide_server.data_dir / "environments"
    done = subprocess.run(
        [str(python), "-c", "import cowsay, loom; print(cowsay.__name__)"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.strip() == "cowsay", done.stderr
    assert cli(ide_server, "abort", "run", run).returncode == 0
    assert wait_for(ide_server, run, {"ABORTED"})["phase"] == "ABORTED"
    assert_no_processes_left(str(workspace))


def test_the_action_page_shows_the_image_and_its_build_log(
    server: ServerProcess, tmp_path: Path, browser: Any
) -> None:
    from playwright.sync_api import expect

    from tests.e2e.test_ui_browser import new_page, no_page_errors, sign_in

    flow = write_module(tmp_path / "flow.py", FLOW)
    done = remote_run(server, str(flow), "in_new")
    assert done["phase"] == "SUCCEEDED", done
    page = new_page(browser)
    sign_in(page, server, f"/runs/{done['run']}")
    page.locator("#tree .row", has_text="in_new").first.click()
    box = page.locator("section.environment")
    expect(box).to_contain_text("cowsay==6.1")
    expect(box).to_contain_text("built")
    key = box.locator("code").inner_text()
    assert (server.data_dir / "environments" / key / "bin" / "python").exists()
    box.get_by_text("Build log").click()
    expect(box.locator("pre.log")).to_contain_text("building environment")
    no_page_errors(page, server)
