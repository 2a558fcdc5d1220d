"""Typed inputs and outputs: dataclasses, pydantic models, enums, dates, NamedTuples, None."""

import datetime as dt
import enum
from dataclasses import dataclass
from typing import NamedTuple

import pydantic

import loom

env = loom.TaskEnvironment("typed")


class Unit(enum.Enum):
    CELSIUS = "C"
    FAHRENHEIT = "F"


@dataclass
class Reading:
    sensor: str
    value: float


class Station(pydantic.BaseModel):
    name: str
    readings: list[Reading]


class Summary(NamedTuple):
    station: str
    mean: float
    unit: Unit
    day: dt.date
    warning: str | None


@env.task
async def summarise(
    station: Station, unit: Unit = Unit.CELSIUS, day: dt.date = dt.date(2026, 1, 1)
) -> Summary:
    values = [r.value for r in station.readings]
    mean = sum(values) / len(values) if values else 0.0
    return Summary(station.name, mean, unit, day, None if values else "no readings")


if __name__ == "__main__":
    station = Station(name="north", readings=[Reading("a", 1.0), Reading("b", 3.0)])
    out = loom.run(summarise, station=station).outputs()
    print(type(out).__name__, out.mean, out.unit, out.warning)
