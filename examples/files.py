"""Files and directories passed between tasks; no set-up needed in local mode."""

import tempfile
from pathlib import Path

import loom
from loom.io import Dir, File

env = loom.TaskEnvironment("files")


@env.task
async def write_report(lines: list[str], out_dir: Dir) -> File:
    path = Path(await out_dir.download()) / "report.txt"
    path.write_text("\n".join(lines))
    return await File.from_local(path)


@env.task
async def count_words(report: File) -> int:
    async with report.open("r") as f:
        return len((await f.read()).split())


@env.task
async def main(lines: list[str] = ["to be", "or not to be"]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = await write_report(lines, Dir.from_local_sync(tmp))
        return await count_words(report)


if __name__ == "__main__":
    print(loom.run(main).outputs())
