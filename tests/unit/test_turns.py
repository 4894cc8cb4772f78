"""``Turn``: a batch that has held the loop for its slice lets other tasks run, and a
batch within its slice does not give the loop up at all (gateway/turns.py)."""

from __future__ import annotations

import asyncio

from intercom_gateway.gateway.turns import Turn


async def _others_ran_during(turn: Turn, takes: int) -> int:
    """How many times another ready task ran while a batch took ``takes`` turns."""
    ran = 0
    stop = False

    async def other() -> None:
        nonlocal ran
        while not stop:
            ran += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    await asyncio.sleep(0)  # the other task is waiting for its next turn
    ran = 0
    for _ in range(takes):
        await turn.take()
    stop = True
    await task
    return ran


async def test_a_batch_past_its_slice_lets_the_next_task_in_at_every_take() -> None:
    assert await _others_ran_during(Turn(0.0), 5) == 5


async def test_a_batch_within_its_slice_keeps_the_loop() -> None:
    assert await _others_ran_during(Turn(3_600.0), 5) == 0
