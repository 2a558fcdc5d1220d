"""DataFrames between tasks (needs `pip install 'loom[dataframe]'`)."""

import pandas as pd

import loom
from loom.io import DataFrame

env = loom.TaskEnvironment("frames")


@env.task(cache="auto")  # cached frames are stored as Parquet
async def load(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"x": range(rows), "y": [i * i for i in range(rows)]})


@env.task
async def describe(frame: pd.DataFrame) -> DataFrame:
    return DataFrame.from_df(frame.describe())


@env.task
async def main(rows: int = 10) -> float:
    stats = await describe(await load(rows))
    return float(stats.to_pandas().loc["mean", "y"])


if __name__ == "__main__":
    print(loom.run(main).outputs())
