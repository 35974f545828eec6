"""Shared fixtures: real SIP peers on loopback (tests/peers) and the phone run as a real process."""

from __future__ import annotations

import asyncio
import inspect

import pytest

pytest_plugins = ["tests.peers.fixtures", "tests.phone_process"]


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """An ``async def`` test runs on a loop of its own (where an in-process phone runs), bounded to 30 s."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**arguments), 30))
    return True
