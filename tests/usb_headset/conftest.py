"""Fixtures for the USB headset tests: a phone on the fake SIP engine (tests/inputs/conftest.py)."""

from __future__ import annotations

from tests.inputs.conftest import phone_rig  # noqa: F401
