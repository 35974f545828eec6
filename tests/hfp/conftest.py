"""Fixtures for the Bluetooth headset tests: the real bluealsa, and a phone to use it."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator

import pytest

from tests.hfp.bluealsa_rig import NOT_INSTALLED, Bluealsa, bluealsa_installed
from tests.inputs.conftest import phone_rig  # noqa: F401  (the in-process phone on the fake SIP engine)


@pytest.fixture
def bluealsa() -> Iterator[Bluealsa]:
    """The real bluealsa (``-p hfp-ag -p hsp-ag``) on a private system bus beside a fake ``org.bluez``, ready
    for headsets to connect (tests/hfp/bluealsa_rig.py). It starts in 10 to 30 ms, so each test has its own."""
    if not bluealsa_installed():
        pytest.fail(NOT_INSTALLED)
    rig = Bluealsa().start()
    try:
        yield rig
    finally:
        rig.stop()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """``async def`` tests here run on a loop of their own (the phone's), bounded to 30 s."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**arguments), 30))
    return True
