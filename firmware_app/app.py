"""``firmware-app run``: the service's main loop, its signals and its systemd readiness and watchdog."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from firmware_app import config as cfg
from firmware_app.control import ControlServer
from firmware_app.plugins import PluginHost
from firmware_app.sdnotify import Notifier

if TYPE_CHECKING:
    from firmware_app.phone import Phone

log = logging.getLogger("firmware_app")


def prepare(config_path: str, *, secrets: bool = True, strict: bool = False) -> tuple[cfg.Config, PluginHost]:
    """Load the configuration and the plugins and let each plugin check its own tables."""
    config = cfg.load(config_path, secrets=secrets)
    host = PluginHost(strict=strict)
    host.load_entry_points(config.plugins.disable, config.plugins.only)
    host.load_modules(config.plugins.modules)
    config.known_actions = {name for name, _ in host.actions()}  # lets plugins check a mapping's action names
    host.configure(config)
    config.check_unclaimed()
    return config, host


def setup_logging(level: str) -> None:
    # Under systemd the journal stamps each line; elsewhere a person reading the terminal wants the time.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s.%(msecs)03d " + fmt
    logging.basicConfig(level=level.upper(), format=fmt, datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    if level != "debug":
        logging.getLogger("asyncio").setLevel(logging.WARNING)


#: The phone asked to be started again (Phone.request_restart): firmware-app.service restarts on it
#: (RestartForceExitStatus=) and counts it as no failure (SuccessExitStatus=).
EXIT_RESTART = 75


def run(config: cfg.Config, host: PluginHost) -> int:
    return asyncio.run(_serve(config, host))


async def _serve(config: cfg.Config, host: PluginHost) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    from firmware_app.phone import Phone  # the engine, and so PJSUA2, only for the command that runs the phone

    notifier = Notifier()
    phone = Phone(config, host)
    control = ControlServer(phone, config.control.socket)
    try:
        await phone.start()
        await control.start()
    except Exception as e:
        log.error("the phone could not start: %s", e)
        await phone.stop()
        notifier.notify(f"STATUS=failed to start: {e}")
        return 1

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] in ("registration", "state"):
            notifier.notify(_status_line(phone))

    phone.subscribe(on_event)
    notifier.notify("READY=1", _status_line(phone))
    watchdog = notifier.watchdog_interval()
    pinger = asyncio.ensure_future(_watchdog(phone, notifier, watchdog)) if watchdog else None
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(phone.restart_requested.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for waiting in waits:
        waiting.cancel()
    log.info("stopping")
    notifier.notify("STOPPING=1")
    if pinger:
        pinger.cancel()
    await phone.stop()
    await control.stop()
    notifier.close()
    return EXIT_RESTART if phone.restart_requested.is_set() else 0


async def _watchdog(phone: Phone, notifier: Notifier, interval: float) -> None:
    """Ping systemd only while the phone can take a call: the engine polls and PJSUA backs its call table."""
    while True:
        problem = phone.health()
        if problem is None:
            notifier.notify("WATCHDOG=1")
        else:
            log.error("%s: withholding the watchdog ping", problem)
        await asyncio.sleep(interval)


def _status_line(phone: Phone) -> str:
    reg = phone.registration
    detail = f" ({reg.code} {reg.reason})" if reg.state == "failed" else ""
    return f"STATUS={reg.state}{detail}, {phone.state.value.replace('_', ' ')}"
