"""Shared plumbing for the SIP peers: errors, free loopback ports, bounded waits and owned subprocesses."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TypeVar

LOOPBACK = "127.0.0.1"
SETUP_HINT = ("run the project's setup, tests/setup.sh (it installs kamailio, baresip-core, linphone-cli and "
              "sip-tester)")

T = TypeVar("T")


class PeerError(RuntimeError):
    """A SIP peer could not be started, driven or queried."""


class PeerTimeout(PeerError, TimeoutError):
    """A bounded wait on a SIP peer ran out of time."""


def require_binary(name: str) -> str:
    """Return the absolute path of an executable, or fail with a message that says how to get it."""
    path = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if os.access(p, os.X_OK)),
        None,
    )
    if path is None:
        raise PeerError(f"'{name}' is not installed: {SETUP_HINT}")
    return path


def free_port(*, udp: bool = True, tcp: bool = True, attempts: int = 50) -> int:
    """Return a loopback port that is free for UDP and/or TCP at the same number right now."""
    for _ in range(attempts):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        with probe:
            probe.bind((LOOPBACK, 0))
            port: int = probe.getsockname()[1]
            if not (udp and tcp):
                return port
            other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with other:
                try:
                    other.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise PeerError(f"no loopback port free for both UDP and TCP after {attempts} attempts")


def wait_until(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    interval: float = 0.02,
    alive: Callable[[], None] | None = None,
) -> T:
    """Poll `probe` until it returns something other than None/False, for at most `timeout` seconds.

    `alive` is called on every round so that a peer that died fails at once instead of at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        result = probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            raise PeerTimeout(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def tail(path: Path, lines: int = 25) -> str:
    """Return the last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """A foreground subprocess in its own session, with its output in a file and an idempotent stop()."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, *, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, *, stdin: int = subprocess.DEVNULL) -> None:
        if self._proc is not None:
            raise PeerError(f"{self.name} was already started")
        # O_APPEND: the peer's own worker processes share this descriptor and write whole lines.
        self._log = open(self.log_path, "ab", buffering=0)  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            self.argv,
            stdin=stdin,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            # A session of its own lets stop() reach the peer's forked workers through one process group.
            start_new_session=True,
        )

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def check_alive(self) -> None:
        """Raise PeerError with the end of the log if the process has exited."""
        if self._proc is not None and self._proc.poll() is not None:
            raise PeerError(
                f"{self.name} exited with status {self._proc.returncode}; end of {self.log_path}:\n"
                f"{tail(self.log_path)}"
            )

    def stop(self, timeout: float = 5.0) -> int | None:
        """Terminate the process group, kill it if it outlives `timeout`; safe to call more than once."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self._signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(proc, signal.SIGKILL)
                proc.wait(timeout)
            # Workers that ignored SIGTERM after their parent left would keep the port.
            self._signal_group(proc, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode if proc is not None else None

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
