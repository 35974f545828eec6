"""Fixtures for the call history tests: the in-process phone on the fake SIP engine."""

from __future__ import annotations

from tests.inputs.conftest import phone_rig  # noqa: F401  (the in-process phone on the fake SIP engine)
