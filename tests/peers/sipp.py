"""sipp as a scripted SIP party: a digest-auth REGISTER helper and call targets that answer, are busy or ring."""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from .kamailio import Kamailio
from .support import LOOPBACK, ManagedProcess, PeerError, free_port, require_binary, tail, wait_until

SCENARIOS = Path(__file__).with_name("scenarios")

Mode = Literal["answer", "busy", "no_answer", "transferee"]
_SCENARIO_OF_MODE: dict[str, str] = {
    "answer": "uas_answer.xml",
    "busy": "uas_busy.xml",
    "no_answer": "uas_no_answer.xml",
    "transferee": "uas_transferee.xml",  # answers, takes a REFER, ends it with the NOTIFY `variables` say
}


def register(user: str, password: str, kamailio: Kamailio, local_port: int, *, expires: int = 300,
             contact_host: str = LOOPBACK, source_port: int | None = None, workdir: Path | None = None,
             timeout: float = 5.0) -> None:
    """REGISTER sip:USER@domain -> sip:USER@contact_host:local_port with digest auth; expires=0 removes it.

    The REGISTER goes out from `source_port` (a free one if None), not from local_port, so the contact can
    be a UAS that is already running there.
    """
    sipp = require_binary("sipp")
    with tempfile.TemporaryDirectory(prefix="sipp-reg-") as scratch:
        logdir = Path(workdir) if workdir is not None else Path(scratch)
        logdir.mkdir(parents=True, exist_ok=True)
        errors = logdir / f"register-{user}-{local_port}-{expires}-errors.log"
        argv = [
            sipp, f"{kamailio.host}:{kamailio.port}", "-sf", str(SCENARIOS / "register.xml"),
            "-i", LOOPBACK, "-p", str(source_port or free_port(tcp=False)), "-t", "u1", "-m", "1", "-nostdin",
            "-s", user, "-au", user, "-ap", password,
            "-set", "contact_host", contact_host, "-set", "contact_port", str(local_port),
            "-set", "expires", str(expires),
            # A refused REGISTER must not be followed by sipp's default "abort the call with a BYE".
            "-default_behaviors", "all,-bye",
            # sipp's own deadline ends a stuck registration before ours kills it.
            "-timeout", f"{max(int(timeout) - 1, 1)}s", "-timeout_error",
            "-trace_err", "-error_file", str(errors),
        ]
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout, check=False, cwd=logdir)
        except subprocess.TimeoutExpired as exc:
            raise PeerError(f"sipp REGISTER of {user} did not finish in {timeout:.1f} s") from exc
        if done.returncode != 0:
            raise PeerError(f"sipp REGISTER of {user} failed (exit {done.returncode}):\n{tail(errors)}\n"
                            f"{done.stderr[-2000:]}")


class SippTarget:
    """A sipp UAS registered as sip:USER@{kamailio.domain}: it answers, is busy or never answers.

    "answer": 180, 200 after 200 ms, then waits for the caller's BYE (re-INVITEs are answered too).
    "busy": 486 Busy Here. "no_answer": 180 and rings until CANCEL (200, then 487).
    sipp serves any number of calls at once until stop(), or exits after `max_calls`.
    """

    def __init__(self, workdir: Path, user: str, password: str, kamailio: Kamailio, mode: Mode = "answer", *,
                 max_calls: int | None = None, variables: dict[str, str] | None = None) -> None:
        if mode not in _SCENARIO_OF_MODE:
            raise ValueError(f"mode must be one of {sorted(_SCENARIO_OF_MODE)}, not {mode!r}")
        self.workdir = Path(workdir)
        self.user = user
        self.password = password
        self.kamailio = kamailio
        self.mode = mode
        self.max_calls = max_calls
        self.variables = dict(variables or {})  # the scenario's [$name] values (-set name value)
        self.port = 0
        self.register_port = 0
        self.log_path = self.workdir / f"sipp-{user}-{mode}.log"
        self.messages_path = self.workdir / f"sipp-{user}-{mode}-messages.log"
        self.errors_path = self.workdir / f"sipp-{user}-{mode}-errors.log"
        self._process: ManagedProcess | None = None
        self._registered = False

    @property
    def uri(self) -> str:
        return self.kamailio.uri(self.user)

    @property
    def source(self) -> str:
        """"ip:port" this target sends SIP from (its column in a Kamailio ladder)."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def sources(self) -> tuple[str, str]:
        """The call port and the port its REGISTERs come from: name both to get one ladder column."""
        return self.source, f"{LOOPBACK}:{self.register_port}"

    def start(self, timeout: float = 5.0) -> Self:
        if self._process is not None:
            raise PeerError(f"sipp target {self.user} was already started")
        sipp = require_binary("sipp")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.register_port = free_port(tcp=False)
        media_port = free_port(tcp=False)
        argv = [
            sipp, "-sf", str(SCENARIOS / _SCENARIO_OF_MODE[self.mode]),
            "-i", LOOPBACK, "-p", str(self.port), "-t", "u1", "-s", self.user,
            # Each instance needs its own media port: the default 6000 would clash between targets.
            "-mi", LOOPBACK, "-mp", str(media_port), "-nostdin",
            "-trace_msg", "-message_file", str(self.messages_path),
            "-trace_err", "-error_file", str(self.errors_path),
        ]
        if self.max_calls is not None:
            argv += ["-m", str(self.max_calls)]
        for name, value in self.variables.items():
            argv += ["-set", name, value]
        self._process = ManagedProcess(f"sipp target {self.user}", argv, self.log_path, cwd=self.workdir)
        try:
            self._process.start()
            wait_until(lambda: _udp_bound(self.port), timeout, f"sipp target {self.user} to listen",
                       interval=0.02, alive=self._process.check_alive)
            register(self.user, self.password, self.kamailio, self.port, source_port=self.register_port,
                     workdir=self.workdir, timeout=timeout)
            self._registered = True
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Remove the registration (so a later target for the same user is the only contact) and end sipp."""
        if self._registered:
            self._registered = False
            # Best effort: the binding expires on its own, and stopping must not fail the test.
            with contextlib.suppress(PeerError):
                register(self.user, self.password, self.kamailio, self.port, expires=0,
                         source_port=self.register_port, workdir=self.workdir)
        if self._process is not None:
            self._process.stop()
            self._process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def calls_received(self) -> int:
        """Distinct calls (Call-IDs) whose INVITE reached sipp, from its message trace."""
        return len(self._received_invite_call_ids())

    def wait_calls(self, count: int, timeout: float = 5.0) -> int:
        return wait_until(lambda: self.calls_received if self.calls_received >= count else None, timeout,
                          f"{count} call(s) at sipp target {self.user}")

    def _received_invite_call_ids(self) -> set[str]:
        try:
            text = self.messages_path.read_text(errors="replace")
        except FileNotFoundError:
            return set()
        call_ids: set[str] = set()
        # Each traced message starts with "... message received [N] bytes :" then a blank line.
        for block in re.split(r"^-{10,}.*$", text, flags=re.MULTILINE):
            received = re.search(r"message received \[\d+\] bytes :\s*\n\s*\n(INVITE .*)", block, flags=re.DOTALL)
            if received:
                call_id = re.search(r"^(?:Call-ID|i)\s*:\s*(\S+)", received.group(1),
                                    flags=re.MULTILINE | re.IGNORECASE)
                if call_id:
                    call_ids.add(call_id.group(1))
        return call_ids


def _udp_bound(port: int) -> bool:
    """True once something has bound 127.0.0.1:port for UDP (Linux /proc/net/udp)."""
    wanted = f"0100007F:{port:04X}"
    try:
        rows = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return True  # no procfs: the registration below will tell
    return any(row.split()[1] == wanted for row in rows if len(row.split()) > 1)
