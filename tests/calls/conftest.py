"""The call actions in a real phone on the fake SIP engine (tests/inputs/conftest.py)."""

from __future__ import annotations

from tests.inputs.conftest import phone_rig  # noqa: F401
