"""Which input libraries a phone imports, and its memory: the plugins loaded, configured, started and stopped
as ``firmware-app run`` does, on a :class:`Phone` whose SIP engine is not started.

``python -m tests.inputs.idle_phone [CONFIG]`` prints one JSON object: the plugins loaded, the input libraries
in ``sys.modules`` once the plugins started, the process's RSS then (kB), and the plugins' error lines. Without
CONFIG the phone has an account and nothing else: no GPIO pin, BLE button or headset key device. A test runs
it in a subprocess so that what other tests imported does not count.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

#: The input plugins' libraries (top-level module names), with what they pull in (dbus-fast under bleak).
LIBRARIES = ("gpiozero", "bleak", "bleak_retry_connector", "dbus_fast", "evdev")
MINIMAL = '[account]\nregistrar = "pbx.test"\nuser = "1000"\n'


def input_libraries() -> list[str]:
    return sorted({name.partition(".")[0] for name in sys.modules} & set(LIBRARIES))


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def _run(config_path: str) -> dict[str, Any]:
    from firmware_app import app
    from firmware_app.phone import Phone

    config, host = app.prepare(config_path, secrets=False)
    phone = Phone(config, host)
    phone.loop = asyncio.get_running_loop()
    host.startup(phone)
    await asyncio.sleep(0.2)  # the plugins' tasks take their first steps
    report = {"plugins": host.names(), "input_libraries": input_libraries(), "rss_kb": rss_kb()}
    host.shutdown(phone)
    await asyncio.sleep(0)
    return report


def main(argv: list[str]) -> int:
    errors = _Errors()
    logging.getLogger().addHandler(errors)
    with tempfile.TemporaryDirectory() as tmp:
        path = argv[0] if argv else str(Path(tmp, "config.toml"))
        if not argv:
            Path(path).write_text(MINIMAL)
        report = asyncio.run(_run(path))
    print(json.dumps({**report, "errors": errors.lines}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
