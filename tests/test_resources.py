"""Resource requests: the quantities users write, and what they mean."""

from __future__ import annotations

import pytest

from loom._resources import gpu_count, parse_memory
from loom.errors import TaskDefinitionError


@pytest.mark.parametrize(
    ("gpu", "count"), [(0, 0), (1, 1), ("2", 2), ("A100", 1), ("A100:2", 2), ("nvidia-l4:4", 4)]
)
def test_gpu_counts(gpu: int | str, count: int) -> None:
    assert gpu_count(gpu) == count


@pytest.mark.parametrize("gpu", [-1, True, "", "A100:", ":2", "two", "A100:x", 1.5])
def test_bad_gpu_requests_are_clear_errors(gpu: object) -> None:
    with pytest.raises(TaskDefinitionError, match="gpu must be a count or a device"):
        gpu_count(gpu)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("memory", "size"), [(512, 512), ("1Ki", 1024), ("2G", 2 * 10**9), ("1.5Gi", 3 << 29)]
)
def test_memory_quantities(memory: int | str, size: int) -> None:
    assert parse_memory(memory) == size
