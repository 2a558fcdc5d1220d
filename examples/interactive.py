"""Interactive tasks: debug a task in VS Code (or JupyterLab) where it runs, then resume it.

Locally the decorators change nothing: ``loom run examples/interactive.py train`` just runs.
On the platform the root action opens a VS Code session with this code and the real inputs:

    loom server start --detach
    loom ide install vscode            # once per machine (a few minutes)
    loom run --remote examples/interactive.py train --epochs 3
    # open the printed session URL, set a breakpoint, run "Interactive Debugging",
    # edit the code, then resume: the run continues with the edited task
    loom resume RUN                    # or "Resume Task" in the editor
"""

from __future__ import annotations

import asyncio

import loom
from loom.interactive import jupyter, vscode

env = loom.TaskEnvironment("interactive")


@env.task
async def step(epoch: int, rate: float) -> float:
    return rate / (epoch + 1)


@vscode(max_idle_seconds=1800, run_task_first=False)
@env.task
async def train(epochs: int = 3, rate: float = 0.5) -> float:
    """Sum the per-epoch losses; each epoch is its own action."""
    losses = await asyncio.gather(*(step(e, rate) for e in range(epochs)))
    return round(sum(losses), 6)


@jupyter(max_idle_seconds=1800, notebook_dir="notebooks")
@env.task
async def explore(rate: float = 0.5) -> float:
    """Open JupyterLab with a notebook that loads ``rate`` and runs this task."""
    return await step(0, rate)


if __name__ == "__main__":
    print(loom.run(train, epochs=3).outputs())
