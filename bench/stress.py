"""What ``python -m bench flood`` and ``python -m bench soak`` share: the phone, its proxy, sipp, a real call.

A :class:`Stage` is Kamailio on 127.0.0.1, the phone (``firmware-app run``, user 1000) registered through it
and a baresip (user 1003) that places the legitimate calls the benches check the phone still answers.
:class:`Sipp` runs one sipp process with a deadline. Everything stays on 127.0.0.0/8.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from bench import procstat
from bench.harness import AppPhone, BenchError, Caller, device_alsa_conf, wait
from firmware_app import control
from firmware_app.errors import FirmwareAppError
from tests.peers.baresip import Baresip
from tests.peers.kamailio import Kamailio
from tests.peers.support import PeerError, require_binary

USERS = {str(n): f"pw{n}" for n in range(1000, 1010)}
PHONE_USER = "1000"
LEGIT_USER = "1003"
SCENARIOS = Path(__file__).with_name("scenarios")


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def free_udp_port(host: str) -> int:
    """A UDP port free on ``host`` right now (sipp binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class Stage:
    """Kamailio, the phone registered as 1000 and a baresip caller (1003) for legitimate calls."""

    def __init__(self, work: Path, body: str = "", *, host_alsa: bool = False) -> None:
        self.work = work
        self.body = body
        self.env = {} if host_alsa else {"ALSA_CONFIG_PATH": str(device_alsa_conf(work))}
        self.env["PYTHONUNBUFFERED"] = "1"  # the log is read while the phone runs
        self.env["PYTHONFAULTHANDLER"] = "1"  # a crash in PJSIP leaves the Python stack in the log
        self.pbx = Kamailio(work / "kamailio", USERS)
        self._phone: AppPhone | None = None
        self.ua: Baresip | None = None
        self.caller: Caller | None = None

    @property
    def phone(self) -> AppPhone:
        if self._phone is None:
            raise BenchError("the stage is not up")
        return self._phone

    def __enter__(self) -> Self:
        try:
            self.pbx.start()
            self._phone = AppPhone(self.work / "phone", self.pbx, PHONE_USER, USERS[PHONE_USER], self.body, self.env,
                                   name="phone")
            self.phone.start()
            wait(lambda: self.registered() or not self.alive(), 20, "the phone to register", interval=0.1)
            if not self.alive():
                raise BenchError(f"the phone exited at start: {self.log_tail()}")
            self.ua = Baresip(self.work / "legit", LEGIT_USER, USERS[LEGIT_USER], self.pbx).start()
            self.caller = Caller(self.ua, self.pbx)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._phone is not None:
            self._phone.stop()
        if self.ua is not None:
            self.ua.stop()
        self.pbx.stop()

    # -- the phone, from outside --

    @property
    def log_path(self) -> Path:
        return self.phone.workdir / "phone.log"

    def alive(self) -> bool:
        return self.phone.alive()

    def request(self, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any] | None:
        """One control-socket request on a connection of its own; None when the phone does not answer."""
        try:
            return control.request(self.phone.socket_path, message, timeout)
        except (FirmwareAppError, OSError, ValueError):
            return None

    def status(self) -> dict[str, Any] | None:
        reply = self.request({"cmd": "status"})
        return reply["result"] if reply and reply.get("ok") else None

    def registered(self) -> bool:
        status = self.status()
        return bool(status and status["registration"]["state"] == "registered")

    def rss_mb(self) -> float | None:
        try:
            return procstat.rss_kb(self.phone.pid) / 1024
        except (OSError, KeyError, AssertionError):  # KeyError: a dying process's status has no VmRSS
            return None

    def peak_rss_mb(self) -> float | None:
        """The most the process ever had resident (VmHWM)."""
        try:
            return procstat.status_kb(self.phone.pid, "VmHWM")["VmHWM"] / 1024
        except (OSError, KeyError, AssertionError):
            return None

    def sip_address(self) -> tuple[str, int]:
        """Where the phone listens for SIP: its contact at the registrar."""
        for contact in self.pbx.contacts(PHONE_USER):
            m = re.search(r"@([\d.]+):(\d+)", contact)
            if m:
                return m[1], int(m[2])
        raise BenchError(f"no contact for {PHONE_USER} at the registrar")

    def log_tail(self, count: int = 3) -> str:
        """Why the phone died, from its log: a failed assertion, else Python's fatal error, else the last lines."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        lines = text.splitlines()
        why = [line for line in lines if "Assertion" in line] or [line for line in lines if "Fatal Python" in line]
        return " | ".join(line.strip() for line in why[-1:] or lines[-count:])

    def death(self) -> str:
        """How the phone process ended: exit status or signal, and the line that says why."""
        assert self.phone.process is not None
        code = self.phone.process.poll()
        how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit {code}"
        return f"{how}: {self.log_tail()}"

    # -- a legitimate call through the proxy --

    def legit_call(self, timeout: float = 5.0) -> str | None:
        """baresip rings the phone, ``answer`` on the control socket, baresip hangs up: None, or what failed."""
        assert self.caller is not None and self.ua is not None
        try:
            call_id = self.caller.ring(self.phone, timeout)
        except PeerError as e:
            self._drop_legit()
            return f"did not ring ({e.__class__.__name__})"
        reply = self.request({"cmd": "answer"})
        if not reply or not reply.get("ok"):
            self._drop_legit()
            return f"answer refused: {reply.get('error') if reply else 'no reply'}"
        try:
            self.caller.established(call_id, timeout)
            self.caller.hang_up(call_id, timeout)
        except PeerError as e:
            self._drop_legit()
            return f"answered but not established ({e.__class__.__name__})"
        return None

    def _drop_legit(self) -> None:
        assert self.ua is not None
        with contextlib.suppress(PeerError):
            self.ua.hangup()


class Sipp:
    """One sipp run in a session of its own (so it can be stopped with what it forked), with a deadline.

    Its scenario's ``<log>`` lines, its statistics and its errors go to files named after the run.
    """

    def __init__(self, name: str, argv: Sequence[str], workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.log_path = workdir / f"{name}-logs.log"
        self.stat_path = workdir / f"{name}-stat.csv"
        self.argv = [require_binary("sipp"), *argv, "-nostdin",
                     "-trace_logs", "-log_file", str(self.log_path),
                     "-trace_stat", "-stf", str(self.stat_path),
                     "-trace_err", "-error_file", str(workdir / f"{name}-errors.log")]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / f"{self.name}.out", "wb") as out:  # sipp's screens
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                            cwd=self.workdir, start_new_session=True)
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout: float) -> int:
        """sipp's exit status (0: every call succeeded, 1: some failed, more: sipp failed); stopped at the deadline."""
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise BenchError(f"{self.name} did not finish within {timeout:.0f} s") from None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def stats(self) -> dict[str, str]:
        """The last row of ``-trace_stat`` (the whole run's counters), by column name."""
        if not self.stat_path.exists():
            return {}
        rows = [line.split(";") for line in self.stat_path.read_text(errors="replace").splitlines() if line.strip()]
        return dict(zip(rows[0], rows[-1])) if len(rows) > 1 else {}

    def log_lines(self) -> list[list[str]]:
        """The scenario's ``<log>`` lines, split into words."""
        if not self.log_path.exists():
            return []
        return [line.split() for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
