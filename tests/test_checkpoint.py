"""``loom.ctx().checkpoint`` in local runs, written as Flyte 2 users write it: what an attempt
saves, the next attempt of the same action loads; the first attempt loads nothing."""

from __future__ import annotations

import io
import pathlib
import tarfile

import pytest

import loom as flyte
from loom import wire
from loom.errors import PayloadTooLargeError

env = flyte.TaskEnvironment(name="checkpoints")

RETRIES = 3


# Flyte 2's own example (examples/checkpoint/generic_data_checkpoint.py), unchanged but the import
@env.task(retries=RETRIES)
def use_checkpoint(n_iterations: int) -> int:
    assert n_iterations > RETRIES
    checkpoint = flyte.ctx().checkpoint
    assert checkpoint is not None  # always available inside a task

    path = checkpoint.load_sync()
    prev = None if path is None else path.read_bytes()

    start = 0
    if prev:
        start = int(prev.decode())

    failure_interval = n_iterations // RETRIES
    for index in range(start, n_iterations):
        if index > start and index % failure_interval == 0:
            raise RuntimeError(f"Failed at iteration {index}, failure_interval {failure_interval}.")
        checkpoint.save_sync(f"{index + 1}".encode())
    return index


@env.task(retries=RETRIES)
async def use_checkpoint_async(n_iterations: int) -> int:
    checkpoint = flyte.ctx().checkpoint
    path = await checkpoint.load()
    prev = None if path is None else path.read_bytes()
    start = int(prev.decode()) if prev else 0
    failure_interval = n_iterations // RETRIES
    for index in range(start, n_iterations):
        if index > start and index % failure_interval == 0:
            raise RuntimeError(f"Failed at iteration {index}")
        await checkpoint.save(f"{index + 1}".encode())
    return index


def test_the_flyte_example_resumes_after_each_failure() -> None:
    run = flyte.run(use_checkpoint, n_iterations=10)
    assert run.outputs() == 9
    (record,) = run.actions()
    assert record.attempts == 4  # failed at 3, 6 and 9, each retry resuming where it stopped


def test_the_async_flyte_example_resumes_after_each_failure() -> None:
    run = flyte.run(use_checkpoint_async, n_iterations=10)
    assert run.outputs() == 9
    assert run.actions()[0].attempts == 4


seen: list[tuple[int, bool, str | None]] = []


@env.task(retries=1)
def resumes(steps: int) -> str:
    cp = flyte.ctx().checkpoint
    attempt = flyte.ctx().attempt
    path = cp.load_sync()
    seen.append((attempt, cp.prev_exists(), None if path is None else path.read_text()))
    done = path.read_text() if path is not None else ""
    for i in range(len(done), steps):
        done += str(i)
        cp.save_sync(done.encode())
        if attempt == 1 and i == 2:
            raise RuntimeError("crash after saving step 2")
    return done


def test_the_first_attempt_loads_none_and_the_retry_its_last_save() -> None:
    seen.clear()
    run = flyte.run(resumes, steps=5)
    assert run.outputs() == "01234"
    assert seen == [(1, False, None), (2, True, "012")]


def test_without_a_retry_the_failure_stands() -> None:
    @env.task
    def once() -> int:
        flyte.ctx().checkpoint.save_sync(b"x")
        raise ValueError("no retries")

    with pytest.raises(ValueError, match="no retries"):
        flyte.run(once)


def test_a_file_loads_as_payload(tmp_path: pathlib.Path) -> None:
    @env.task(retries=1)
    async def model(tmp: str) -> str:
        cp = flyte.ctx().checkpoint
        path = await cp.load()
        if path is None:
            weights = pathlib.Path(tmp) / "weights.bin"
            weights.write_bytes(b"\x00\x01weights")
            await cp.save(weights)  # a pathlib.Path
            await cp.save(str(weights))  # or a str: the later save replaces the earlier
            raise RuntimeError("preempted")
        assert path == cp.path / "payload"
        return path.read_bytes().decode(errors="replace")

    run = flyte.run(model, tmp=str(tmp_path))
    assert run.outputs().endswith("weights")


def test_a_directory_loads_as_the_restored_tree(tmp_path: pathlib.Path) -> None:
    @env.task(retries=2)
    def train(root: str) -> list[str]:
        cp = flyte.ctx().checkpoint
        path = cp.load_sync()
        if path is None:
            state = pathlib.Path(root) / "state"
            (state / "epoch-1").mkdir(parents=True)
            (state / "epoch-1" / "last.ckpt").write_text("epoch 1")
            (state / "config.json").write_text("{}")
            cp.save_sync(state)
            raise RuntimeError("preempted")
        assert path == cp.path
        last = flyte.latest_checkpoint(path)
        assert last is not None
        files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
        return [*files, last.read_text()]

    run = flyte.run(train, root=str(tmp_path))
    assert run.outputs() == ["config.json", "epoch-1/last.ckpt", "epoch 1"]


def test_a_tarball_saved_as_a_file_stays_a_file() -> None:
    # Flyte guesses "directory" from the bytes; loom records what was saved
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("inside.txt")
        tar.addfile(info, io.BytesIO(b""))
    archive = buf.getvalue()

    @env.task(retries=1)
    def keeps(data: bytes) -> bool:
        cp = flyte.ctx().checkpoint
        path = cp.load_sync()
        if path is None:
            cp.save_sync(data)
            raise RuntimeError("again")
        return path.name == "payload" and path.read_bytes() == data

    assert flyte.run(keeps, data=archive).outputs() is True


def test_each_action_has_its_own_checkpoint() -> None:
    @env.task(retries=1)
    async def worker(name: str) -> str:
        cp = flyte.ctx().checkpoint
        path = await cp.load()
        if path is None:
            await cp.save(name.encode())
            raise RuntimeError("again")
        return path.read_text()

    @env.task
    async def main() -> list[str]:
        import asyncio

        return list(await asyncio.gather(worker("a"), worker("b"), worker("c")))

    assert flyte.run(main).outputs() == ["a", "b", "c"]


def test_load_is_restored_once_per_attempt_and_save_does_not_change_it() -> None:
    @env.task(retries=2)
    def steady() -> list[str]:
        cp = flyte.ctx().checkpoint
        attempt = flyte.ctx().attempt
        first = cp.load_sync()
        cp.save_sync(f"attempt {attempt}".encode())
        again = cp.load_sync()  # the previous attempt's, not the one just saved
        assert first == again
        if attempt < 3:
            raise RuntimeError("again")
        assert again is not None
        return [again.read_text()]

    assert flyte.run(steady).outputs() == ["attempt 2"]


def test_an_attempt_that_saves_nothing_passes_on_the_earlier_checkpoint() -> None:
    @env.task(retries=2)
    def skip() -> str:
        cp = flyte.ctx().checkpoint
        attempt = flyte.ctx().attempt
        if attempt == 1:
            cp.save_sync(b"from 1")
        if attempt < 3:
            raise RuntimeError("again")
        path = cp.load_sync()
        assert path is not None
        return path.read_text()

    assert flyte.run(skip).outputs() == "from 1"


def test_bad_saves_say_what_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    @env.task
    def bad(what: str) -> None:
        cp = flyte.ctx().checkpoint
        if what == "missing":
            cp.save_sync("/no/such/checkpoint")
        elif what == "type":
            cp.save_sync(42)  # type: ignore[arg-type]
        else:
            cp.save_sync(b"x" * 101)

    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        flyte.run(bad, what="missing")
    with pytest.raises(TypeError, match="bytes, a file or a directory"):
        flyte.run(bad, what="type")
    monkeypatch.setattr(wire, "MAX_CHECKPOINT_BYTES", 100)
    with pytest.raises(PayloadTooLargeError, match="of 101 bytes is over the limit of 100"):
        flyte.run(bad, what="big")


def test_the_checkpoint_is_there_in_every_task_and_not_outside() -> None:
    @env.task
    def child() -> bool:
        cp = flyte.ctx().checkpoint
        return cp.prev_exists() is False and cp.load_sync() is None and cp.path.is_dir()

    @env.task
    async def parent() -> bool:
        cp = flyte.ctx().checkpoint
        return (await cp.load()) is None and child()

    assert flyte.run(parent).outputs() is True
    assert flyte.ctx() is None
