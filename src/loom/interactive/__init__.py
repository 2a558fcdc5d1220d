"""Interactive tasks: turn any task into a live VS Code or Jupyter session on the platform.

::

    from loom.interactive import vscode

    @vscode(max_idle_seconds=3600)
    @env.task
    async def train(epochs: int) -> float: ...

On the control plane the action opens a session with the task's code and real inputs, reached
through the server's authenticated proxy; resume it (``loom resume RUN ACTION``, the "Resume
Task" launch configuration, the editor's "Resume task" command, or ``resume()`` in a notebook)
and the edited task runs and the run continues. Locally the decorators change nothing.
"""

from ._commands import ResumeError, abort, resume, status
from ._config import (
    CODE_TOGETHER_EXTENSION,
    COPILOT_EXTENSION,
    EXTENSION_PRESETS,
    JUPYTER_EXTENSION,
    PYTHON_EXTENSION,
    VIM_EXTENSION,
    VscodeConfig,
)
from ._decorators import Interactive, jupyter, vscode

__all__ = [
    "CODE_TOGETHER_EXTENSION",
    "COPILOT_EXTENSION",
    "EXTENSION_PRESETS",
    "JUPYTER_EXTENSION",
    "PYTHON_EXTENSION",
    "VIM_EXTENSION",
    "Interactive",
    "ResumeError",
    "VscodeConfig",
    "abort",
    "jupyter",
    "resume",
    "status",
    "vscode",
]
