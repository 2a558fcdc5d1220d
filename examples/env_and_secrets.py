"""Environment variables and secrets, visible through os.environ and loom.ctx().

Locally a secret comes from LOOM_SECRET_<KEY> or ~/.loom/secrets.yaml:

    LOOM_SECRET_GREETING_TOKEN=abc loom run examples/env_and_secrets.py main
"""

import os

import loom

env = loom.TaskEnvironment(
    "configured",
    env_vars={"GREETING": "hello"},
    secrets=[loom.Secret("greeting-token", as_env_var="TOKEN")],
)


@env.task
async def main(name: str = "world") -> str:
    token = loom.ctx().secrets["greeting-token"]  # type: ignore[union-attr]
    assert os.environ["TOKEN"] == token
    return f"{os.environ['GREETING']}, {name} (token has {len(token)} characters)"


if __name__ == "__main__":
    print(loom.run(main).outputs())
