"""Resource requests for a task's execution environment."""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import wire
from .errors import TaskDefinitionError


def parse_memory(value: str | int) -> int:
    """Bytes in a Kubernetes-style quantity such as ``"512Mi"`` or ``"2G"``."""
    try:
        return wire.parse_bytes(value)
    except ValueError:
        raise TaskDefinitionError(
            f"memory must look like '512Mi', '4Gi' or '2G', got {value!r}"
        ) from None


@dataclass(frozen=True, slots=True)
class Resources:
    """CPU, memory, GPU and disk a task asks for.

    ``cpu`` is a count (``1``, ``0.5``, ``"500m"``) or a ``(request, limit)`` pair; ``memory``
    and ``disk`` are quantities such as ``"4Gi"``; ``gpu`` a count or a device with a count
    (``"A100:2"``, Flyte 2's ``"A100 80G:8"``). Local mode records them; the control plane
    schedules by them.

    ``shm`` (Flyte 2: the size of ``/dev/shm``, a quantity or ``"auto"``) is checked and
    recorded; loom's executors share the machine's ``/dev/shm``, so it has no effect.
    """

    cpu: int | float | str | tuple[int | float | str, int | float | str] | None = None
    memory: str | tuple[str, str] | None = None
    gpu: int | str | None = None
    disk: str | None = None
    shm: str | None = None

    def __post_init__(self) -> None:
        if self.shm is not None and self.shm != "auto":
            try:
                wire.parse_bytes(self.shm)
            except ValueError:
                raise TaskDefinitionError(
                    f"shm must be a quantity such as '1Gi' or 'auto', got {self.shm!r}"
                ) from None
        mems = self.memory if isinstance(self.memory, tuple) else (self.memory,)
        for mem in (*mems, self.disk):
            if mem is not None:
                parse_memory(mem)
        if self.gpu is not None:
            gpu_count(self.gpu)
        cpus = self.cpu if isinstance(self.cpu, tuple) else (self.cpu,)
        for cpu in cpus:
            if cpu is not None and _cpu_value(cpu) <= 0:
                raise TaskDefinitionError(f"cpu must be positive, got {cpu!r}")


# a device is named like A100, T4, nvidia-l4 or (Flyte 2) "A100 80G": words with a digit
# ("many" is no device)
_GPU = re.compile(r"(?P<count>\d+)|(?P<device>[A-Za-z][\w -]*\d[\w -]*?)(?::(?P<quantity>\d+))?")


def gpu_count(gpu: int | str) -> int:
    """How many GPUs ``gpu`` asks for: a count (``1``, ``"2"``), a device (``"A100"``: one),
    or both (``"A100:2"``)."""
    m = _GPU.fullmatch(gpu.strip()) if isinstance(gpu, str) else None
    if isinstance(gpu, int) and not isinstance(gpu, bool) and gpu >= 0:
        return gpu
    if m is None:
        raise TaskDefinitionError(f"gpu must be a count or a device such as 'A100:2', got {gpu!r}")
    return int(m["count"] or m["quantity"] or 1)


def _cpu_value(cpu: int | float | str) -> float:
    if isinstance(cpu, str):
        try:
            return float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
        except ValueError as e:
            raise TaskDefinitionError(f"cpu must look like 2, 0.5 or '500m', got {cpu!r}") from e
    return float(cpu)
