import asyncio

import pytest

from asyncq.testing import ManualClock


async def test_sleepers_wake_only_when_the_clock_is_advanced_past_them() -> None:
    clock = ManualClock(start=100.0)
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    tasks = [asyncio.create_task(sleeper("short", 10)), asyncio.create_task(sleeper("long", 60))]
    await asyncio.sleep(0)
    clock.advance(9.5)
    await asyncio.sleep(0)
    assert woke == []
    clock.advance(0.5)
    await asyncio.wait({tasks[0]})
    assert woke == ["short"]
    assert clock.now() == 110.0
    clock.set(160.0)
    await asyncio.wait({tasks[1]})
    assert woke == ["short", "long"]


def test_time_does_not_go_backwards() -> None:
    with pytest.raises(ValueError, match="backwards"):
        ManualClock().advance(-1)
