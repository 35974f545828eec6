"""Fixtures for the Bluetooth headset tests: the real bluealsa, and a phone to use it."""

from __future__ import annotations

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

