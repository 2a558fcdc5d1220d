"""What a running attempt holds, and the room left for more: how the scheduler packs attempts.

Every action holds, while it runs (and is not blocked on children), what its task requests:
CPUs, memory and GPUs, and one slot. A task that requests nothing gets the server's small
default (``LOOM_DEFAULT_CPU``, ``LOOM_DEFAULT_MEMORY``): I/O-bound fan-outs run wide, and a
machine's memory still bounds how many processes start. An attempt in a warm worker holds
``1/concurrency`` of its environment's requests, as the worker runs that many at once.

Warm pools bound their own attempts: a pool runs at most ``replicas x concurrency`` at once,
so the scheduler starts no more than that of its actions (see :func:`pool_of`); the others wait
in the queue, where a restart of the server does not touch them, rather than in the pool.

The scheduler takes waiting actions in creation order. One that does not fit keeps its
place: what it needs is held for it, so later, smaller ones only use what is left beyond it
and it cannot be starved (they still pass it by where it waits for a resource they do not
use, such as a GPU).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from .. import wire
from ..executors import Capacity

#: Rounding slack: a pool's shares (thirds...) add up to a whole only approximately.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Defaults:
    """The requests of a task that makes none."""

    cpu: float = 0.01
    memory_bytes: int = 128 << 20


@dataclass(frozen=True, slots=True)
class Requests:
    """What one running attempt holds: a share of a slot, CPUs, bytes of memory, GPUs."""

    slots: float
    cpu: float
    memory: float
    gpu: float

    @classmethod
    def of(cls, task: wire.TaskSpec, defaults: Defaults) -> Requests:
        r = task.resources
        share = 1.0 if task.reuse is None else 1.0 / task.reuse.concurrency
        return cls(
            slots=share,
            cpu=(defaults.cpu if r.cpu is None else r.cpu) * share,
            memory=float(defaults.memory_bytes if r.memory_bytes is None else r.memory_bytes)
            * share,
            gpu=float(r.gpu or 0) * share,
        )

    @classmethod
    def of_row(cls, row: Any) -> Requests:
        """The requests stored with an action (see ``Action.cpu_request``...)."""
        return cls(row.weight, row.cpu_request, float(row.memory_request), row.gpu_request)

    def columns(self) -> dict[str, float | int]:
        """As the action's columns."""
        return {
            "weight": self.slots,
            "cpu_request": self.cpu,
            "memory_request": int(self.memory),
            "gpu_request": self.gpu,
        }


@dataclass(frozen=True, slots=True)
class Room:
    """What is left of a capacity; may go below zero where a waiting action holds its place."""

    slots: float
    cpu: float
    memory: float
    gpu: float

    @classmethod
    def left(cls, capacity: Capacity, busy: Requests) -> Room:
        slots = math.inf if capacity.slots is None else capacity.slots
        return cls(
            slots - busy.slots,
            capacity.cpu - busy.cpu,
            capacity.memory_bytes - busy.memory,
            capacity.gpu - busy.gpu,
        )

    def fits(self, need: Requests) -> bool:
        return all(
            n <= 0 or n <= have + _EPSILON
            for n, have in (
                (need.slots, self.slots),
                (need.cpu, self.cpu),
                (need.memory, self.memory),
                (need.gpu, self.gpu),
            )
        )

    def minus(self, need: Requests) -> Room:
        return Room(
            self.slots - need.slots,
            self.cpu - need.cpu,
            self.memory - need.memory,
            self.gpu - need.gpu,
        )

    @property
    def full(self) -> bool:
        """Nothing more can start: every attempt holds a slot, some CPU and some memory."""
        return self.slots <= _EPSILON or self.cpu <= _EPSILON or self.memory <= _EPSILON


def pool_of(
    task: wire.TaskSpec, project_id: int, domain: str, bundle: str, run_env: dict[str, str]
) -> str | None:
    """The warm pool attempts of ``task`` in that run run in (``None``: each in a process of
    its own): what makes workers interchangeable, as the executor keys its pools (the
    server's own environment, the same for all, aside)."""
    if task.reuse is None or task.interactive is not None:
        return None
    identity = [
        project_id,
        domain,
        task.environment,
        bundle,
        task.reuse.model_dump(mode="json"),
        sorted(task.env_vars.items()),
        sorted(run_env.items()),
        # (workers run in the image's environment)
        None if task.image is None else task.image.model_dump(mode="json"),
    ]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]


def pool_size(task: wire.TaskSpec) -> int:
    """How many attempts of ``task``'s pool run at once, at most."""
    return 0 if task.reuse is None else task.reuse.max_replicas * task.reuse.concurrency
