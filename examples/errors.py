"""A child's exception reaches the parent as the same Python type, with its traceback."""

import loom

env = loom.TaskEnvironment("errors")


class InsufficientFunds(Exception):
    pass


@env.task
async def withdraw(balance: int, amount: int) -> int:
    if amount > balance:
        raise InsufficientFunds(f"cannot withdraw {amount} from {balance}")
    if amount < 0:
        raise ValueError("amount must be positive")
    return balance - amount


@env.task
async def main(balance: int = 100, amount: int = 150) -> str:
    try:
        left = await withdraw(balance, amount)
    except InsufficientFunds as e:
        return f"declined: {e}"
    return f"ok, {left} left"


@env.task
async def crash() -> int:
    """Fails on purpose: `loom run examples/errors.py crash` shows a trimmed traceback."""
    return await withdraw(10, -1)


if __name__ == "__main__":
    print(loom.run(main).outputs())
