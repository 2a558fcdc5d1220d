"""GPU assignment: each attempt sees only the devices it was given (``CUDA_VISIBLE_DEVICES``).

The scheduler counts GPUs against the executor's capacity; the executor then picks which
devices, numbered from 0 as the driver numbers them, and hands them back when the job ends.
"""

from __future__ import annotations

from ._errors import JobStartError

#: What CUDA (and the libraries on top of it: PyTorch, JAX...) reads to pick devices.
VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


class Devices:
    """The free devices of ``count`` GPUs."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._free = list(range(count))
        self._held: dict[str, list[int]] = {}

    def take(self, job_id: str, n: int) -> dict[str, str]:
        """Give ``job_id`` ``n`` devices: the variables of its process environment (none on
        a machine without GPUs; an empty list hides them all from a job that asked none)."""
        if not self.count:
            if n:
                raise JobStartError(f"job {job_id} needs {n} GPU(s) and this machine has none")
            return {}
        if n > len(self._free):
            raise JobStartError(
                f"job {job_id} needs {n} GPU(s) and {len(self._free)} of {self.count} are free"
            )
        given, self._free = self._free[:n], self._free[n:]
        if given:
            self._held[job_id] = given
        return {VISIBLE_DEVICES: ",".join(map(str, given))}

    def give_back(self, job_id: str) -> None:
        self._free = sorted(self._free + self._held.pop(job_id, []))
