"""The phone under test, run as the real ``firmware-app run`` process and driven through its CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers.kamailio import Kamailio

FIRMWARE_APP = [sys.executable, "-m", "firmware_app.cli"]


class PhoneProcess:
    """One phone: its config and secrets in ``workdir``, its log in ``workdir/phone.log``."""

    def __init__(
        self,
        workdir: Path,
        kamailio: Kamailio,
        *,
        user: str = "1000",
        password: str = "pw1000",
        extra: str = "",
        account: str = "",
        logging: str = "",
        env: dict[str, str] | None = None,
        secrets: str = "",
    ) -> None:
        """``secrets``: more lines for the secrets file (``mqtt_password = "..."``)."""
        self.workdir = workdir
        self.kamailio = kamailio
        self.user = user
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "config.toml"
        self.socket = workdir / "control.sock"
        self.log_path = workdir / "phone.log"
        self.config.write_text(
            f'[account]\nregistrar = "{kamailio.domain}"\nuser = "{user}"\nlocal_port = 0\n'
            f'retry_interval = 1\nretry_max = 4\n{account}\n[control]\nsocket = "{self.socket}"\n\n'
            f'[logging]\nlevel = "debug"\n{logging}\n{extra}'
        )
        secrets_file = workdir / "secrets.toml"
        secrets_file.write_text(f'password = "{password}"\n{secrets}')
        secrets_file.chmod(0o600)
        inherited = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}  # not the test runner's
        # What the phone keeps across restarts (volume, DND, recent calls) stays in the test's folder.
        self.env = {**inherited, "PYTHONUNBUFFERED": "1", "STATE_DIRECTORY": str(workdir), **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.events: list[dict[str, Any]] = []
        self._events_proc: subprocess.Popen[str] | None = None
        self._streaming = threading.Event()

    def start(self, *, registered: bool = True, timeout: float = 10.0) -> PhoneProcess:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*FIRMWARE_APP, "-c", str(self.config), "run"], stdout=self._log, stderr=subprocess.STDOUT, env=self.env
        )
        wait(lambda: self.socket.exists() or self.process.poll() is not None, timeout, "the control socket", self)
        if self.process.poll() is not None:
            raise AssertionError(f"the phone exited with {self.process.returncode}:\n{self.log()}")
        self._follow_events()
        if registered:
            self.wait_registration("registered", timeout)
        return self

    def _follow_events(self) -> None:
        self._events_proc = subprocess.Popen(
            [*FIRMWARE_APP, "--socket", str(self.socket), "events"], stdout=subprocess.PIPE, text=True, env=self.env
        )

        def read() -> None:
            assert self._events_proc and self._events_proc.stdout
            for line in self._events_proc.stdout:
                message = json.loads(line)
                if "event" in message:
                    self.events.append(message)
                else:
                    self._streaming.set()  # the stream opens with the current status

        threading.Thread(target=read, daemon=True).start()
        wait(self._streaming.is_set, 5, "the event stream", self)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._events_proc is not None:
            self._events_proc.kill()
            self._events_proc.wait()
        self._log.close()
        return self.process.returncode

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*FIRMWARE_APP, "--socket", str(self.socket), *args], capture_output=True, text=True, env=self.env, timeout=60
        )
        if check and result.returncode != 0:
            raise AssertionError(f"firmware-app {' '.join(args)} failed: {result.stderr}\n{self.log()}")
        return result

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("status").stdout)

    def wait_registration(self, state: str, timeout: float = 10.0) -> None:
        wait(lambda: self.status()["registration"]["state"] == state, timeout, f"registration {state}", self)

    def wait_state(self, state: str, timeout: float = 10.0) -> None:
        wait(lambda: self.status()["state"] == state, timeout, f"phone state {state}", self)

    def wait_event(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def check() -> bool:
            found[:] = [e for e in list(self.events) if predicate(e)]
            return bool(found)

        wait(check, timeout, "an event", self)
        return found[0]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def source(self) -> str:
        """The phone's ip:port as the proxy sees it (from its REGISTER)."""
        regs = [m for m in self.kamailio.ladder() if m.method == "REGISTER" and m.from_user == self.user and m.is_request]
        assert regs, "the phone never sent REGISTER"
        return regs[-1].source


def wait(predicate: Callable[[], Any], timeout: float, what: str, phone: PhoneProcess | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except AssertionError:
            value = None
        if value:
            return value
        time.sleep(0.05)
    detail = f"\n--- phone log ---\n{phone.log()[-6000:]}" if phone else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")


@pytest.fixture
def phone_factory(tmp_path: Path, kamailio: Kamailio) -> Iterator[Callable[..., PhoneProcess]]:
    phones: list[PhoneProcess] = []

    def make(name: str = "phone", *, proxy: Kamailio | None = None, **kw: Any) -> PhoneProcess:
        phone = PhoneProcess(tmp_path / name, proxy or kamailio, **kw)
        phones.append(phone)
        return phone

    yield make
    for phone in phones:
        phone.stop()
