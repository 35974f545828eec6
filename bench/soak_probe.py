"""Bench plugin for the race soak: the calls PJSUA itself holds, beside the calls the phone believes in.

Loaded by ``python -m bench soak`` with ``[plugins] modules = ["bench.soak_probe"]``::

    firmware-app action bench_calls
    {"pjsua": [1], "engine": {"7": 1}, "phone": [7]}

``pjsua`` is PJSUA's own table (``pjsua_enum_calls``, read through ctypes from the loaded binding: PJSUA2 has
no way to list calls), ``engine`` maps the engine's call ids to the PJSUA slot each one holds, ``phone`` is
what ``status`` shows. A call the phone shows whose slot PJSUA no longer has is a ghost; a PJSUA call the
phone does not know is a leak. It reads the engine's private table on purpose: it is a probe, not a feature.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

from firmware_app import hookimpl
from firmware_app.hookspecs import RegisterAction

MAX_CALLS = 32  # PJSUA_MAX_CALLS; the phone configures fewer


@functools.cache
def _pjsua() -> ctypes.CDLL:
    import pjsua2

    # dlopen of the already loaded binding returns it again: the same PJSUA globals the phone uses.
    return ctypes.CDLL(pjsua2._pjsua2.__file__)


def pjsua_calls() -> list[int]:
    ids = (ctypes.c_int * MAX_CALLS)()
    count = ctypes.c_uint(MAX_CALLS)
    if _pjsua().pjsua_enum_calls(ids, ctypes.byref(count)) != 0:
        raise RuntimeError("pjsua_enum_calls failed")
    return sorted(ids[i] for i in range(count.value))


def bench_calls(phone: Any, argument: str | None) -> dict[str, Any]:
    engine_calls = dict(getattr(phone.engine, "_calls", {}))  # one copy: the engine's thread may change it
    return {
        "pjsua": pjsua_calls(),
        "engine": {str(call_id): call.getId() for call_id, call in engine_calls.items()},
        "phone": [call.id for call in phone.calls()],
    }


@hookimpl
def softphone_register_actions(register: RegisterAction) -> None:
    register("bench_calls", bench_calls)
