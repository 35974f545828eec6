"""A Kamailio registrar/proxy on loopback whose log gives tests the SIP ladder as the proxy saw it."""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from .ladder import SipMessage, causal_order, format_ladder
from .support import LOOPBACK, ManagedProcess, PeerError, free_port, require_binary, wait_until

__all__ = ["Kamailio", "SipMessage", "format_ladder"]

TEMPLATE = Path(__file__).with_name("templates") / "kamailio.cfg"
_SAFE_USER = re.compile(r"[A-Za-z0-9_-]+")
# Worker processes share the log: give one that logged earlier a moment to write its line.
_SETTLE_SECONDS = 0.05
# sun_path is 108 bytes; deep pytest tmp dirs can exceed it.
_MAX_SOCKET_PATH = 100


def _module_dir() -> str:
    candidates = [*glob.glob("/usr/lib/*/kamailio/modules"), "/usr/lib/kamailio/modules"]
    for candidate in candidates:
        if Path(candidate, "tm.so").exists():
            return candidate + "/"
    raise PeerError("Kamailio modules not found (kamailio-sqlite-modules/kamailio-extra-modules missing?)")


def _db_text_value(value: str) -> str:
    # db_text separates columns with ':' and escapes it (and the escape character) with a backslash.
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("\n", "\\n")


class Kamailio:
    """Kamailio 5.6 as registrar (digest auth) and record-routing stateful proxy on 127.0.0.1:PORT.

    Only the proxy's host:port is "myself"; register and call users as sip:USER@{domain}. Requests from
    loopback are trusted, except that with `challenge_refer` a REFER from a user in `users` gets a 407
    until it carries that user's credentials. A REFER whose Refer-To user is in `refuse_refer_to` is
    answered 603 Decline by the proxy itself (a PBX's transfer policy).
    """

    host = LOOPBACK

    def __init__(self, workdir: Path, users: Mapping[str, str], *, challenge_refer: bool = False,
                 refuse_refer_to: Iterable[str] = ()) -> None:
        self.workdir = Path(workdir)
        self.users = dict(users)
        self.challenge_refer = challenge_refer
        self.refuse_refer_to = tuple(refuse_refer_to)
        for user in (*self.users, *self.refuse_refer_to):
            # Users end up in db_text rows and a POSIX regex: keep them to characters neither treats specially.
            if not _SAFE_USER.fullmatch(user):
                raise ValueError(f"user {user!r} must match {_SAFE_USER.pattern}")
        self.log_path = self.workdir / "kamailio.log"
        self.config_path = self.workdir / "kamailio.cfg"
        self._port: int | None = None
        self._keep_port: int | None = None
        self._process: ManagedProcess | None = None
        self._socket_dir: Path | None = None
        self._kamcmd = ""
        self._log_lock = threading.Lock()
        self._log_offset = 0
        self._ordered: list[SipMessage] = []
        self._unordered: list[SipMessage] = []

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Self:
        if self._process is not None:
            raise PeerError("Kamailio was already started")
        kamailio = require_binary("kamailio")
        self._kamcmd = require_binary("kamcmd")
        self.workdir.mkdir(parents=True, exist_ok=True)
        run_dir = self.workdir / "run"
        run_dir.mkdir(exist_ok=True)
        self._port = self._keep_port or free_port()
        self._write_db(self.workdir / "db")
        self.config_path.write_text(self._render_config(self.workdir / "db"))
        self.log_path.write_bytes(b"")
        self._log_offset, self._ordered, self._unordered = 0, [], []
        self._process = ManagedProcess(
            "kamailio",
            [kamailio, "-DD", "-E", "-f", str(self.config_path), "-Y", str(run_dir),
             "-P", str(run_dir / "kamailio.pid"), "-w", str(self.workdir), "-m", "64", "-M", "8"],
            self.log_path,
            cwd=self.workdir,
        )
        try:
            self._process.start()
            # The ctl process answers only once the SIP workers have forked and the sockets are bound.
            wait_until(self._answers_rpc, timeout, "Kamailio's control socket", interval=0.05,
                       alive=self._process.check_alive)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def restart(self, down_for: float = 0.0, timeout: float = 10.0) -> Self:
        """Stop, stay down ``down_for`` seconds, start again on the same port (registrations are lost)."""
        self._keep_port = self.port
        self.stop()
        time.sleep(down_for)
        return self.start(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise PeerError("Kamailio is not started")
        return self._port

    @property
    def domain(self) -> str:
        """The SIP domain, with the port: "127.0.0.1" alone would not be "myself"."""
        return f"{self.host}:{self.port}"

    @property
    def realm(self) -> str:
        """Digest realm of the 401/407 challenges (the domain)."""
        return self.domain

    def uri(self, user: str) -> str:
        return f"sip:{user}@{self.domain}"

    # -- the ladder --------------------------------------------------------------------------------------

    def ladder(self, since: float | None = None) -> list[SipMessage]:
        """Every message logged so far in causal order; only those at or after `since` (time.time()) if given."""
        with self._log_lock:
            if self._read_new_lines():
                # Worker processes share the log, so lines can land slightly out of order.
                self._ordered = causal_order(self._ordered + self._unordered)
                self._unordered = []
            messages = self._ordered
        return list(messages) if since is None else [m for m in messages if m.time >= since]

    def format_ladder(self, messages: list[SipMessage] | None = None, names: Mapping[str, str] | None = None,
                      *, since: float | None = None, width: int = 100) -> str:
        """format_ladder() with this proxy's column; `messages` defaults to ladder(since)."""
        return format_ladder(self.ladder(since) if messages is None else messages, names, proxy=self.domain,
                             width=width)

    def wait_for(self, predicate: Callable[[SipMessage], bool], timeout: float = 5.0,
                 since: float | None = None) -> SipMessage:
        """Return the first message matching `predicate`, polling the log for at most `timeout` seconds.

        It returns a moment after the match: another worker may log an earlier message (a 407 it sent just
        before the retried request arrived) a little later, and ladder() right after should include it.
        """
        found = wait_until(
            lambda: next((m for m in self.ladder(since) if predicate(m)), None),
            timeout, "a matching SIP message in the Kamailio ladder", interval=0.02,
            alive=self._check_alive,
        )
        time.sleep(_SETTLE_SECONDS)
        return found

    # -- registrar state ---------------------------------------------------------------------------------

    def rpc(self, *args: str, timeout: float = 5.0) -> str:
        """Run one kamcmd command on this instance's control socket and return its output."""
        if self._process is None:
            raise PeerError("Kamailio is not started")
        try:
            done = subprocess.run([self._kamcmd, "-s", f"unix:{self._ctl_socket}", *args],
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise PeerError(f"kamcmd {' '.join(args)} timed out") from exc
        if done.returncode != 0:
            raise PeerError(f"kamcmd {' '.join(args)} failed: {(done.stderr or done.stdout).strip()}")
        return done.stdout

    def contacts(self, user: str) -> list[str]:
        """Contact URIs currently bound to `user` in the location table (expired ones left out)."""
        try:
            # "s:" forces a string: kamcmd would send a bare "1000" as an integer and find nothing.
            output = self.rpc("ul.lookup", "location", f"s:{user}")
        except PeerError as exc:
            if "not found" in str(exc).lower():
                return []
            raise
        # usrloc purges expired bindings on a timer; until then they are listed with "Expires: expired".
        bindings = re.findall(r"^\s*Address:\s*(\S+)\s*$\s*^\s*Expires:\s*(\S+)", output, flags=re.MULTILINE)
        return [address for address, expires in bindings if expires.isdigit() or expires == "permanent"]

    def registered(self, user: str) -> bool:
        return bool(self.contacts(user))

    def wait_registered(self, user: str, timeout: float = 5.0) -> list[str]:
        return wait_until(lambda: self.contacts(user) or None, timeout, f"{user} to be registered",
                          interval=0.05, alive=self._check_alive)

    # -- internals ---------------------------------------------------------------------------------------

    @property
    def _ctl_socket(self) -> Path:
        path = self.workdir / "run" / "ctl.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        if self._socket_dir is None:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="kam-"))
        return self._socket_dir / "ctl.sock"

    def _read_new_lines(self) -> bool:
        """Parse what the log gained since the last call; True if it held new ladder lines."""
        # Incremental: wait_for() polls every few milliseconds while a session's log keeps growing.
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                chunk = log.read()
        except FileNotFoundError:
            return False
        complete, newline, _ = chunk.rpartition(b"\n")
        if not newline:
            return False  # only a half-written line so far
        self._log_offset += len(complete) + 1
        before = len(self._unordered)
        for line in complete.decode(errors="replace").splitlines():
            message = SipMessage.from_log_line(line)
            if message is not None:
                self._unordered.append(message)
        return len(self._unordered) > before

    def _answers_rpc(self) -> bool:
        if not self._ctl_socket.exists():
            return False
        try:
            self.rpc("core.uptime", timeout=2.0)
        except PeerError:
            return False
        return True

    def _check_alive(self) -> None:
        if self._process is None:
            raise PeerError("Kamailio is not started")
        self._process.check_alive()

    def _write_db(self, db_dir: Path) -> None:
        db_dir.mkdir(exist_ok=True)
        # auth_db 5.6 checks that the subscriber table is at version 7.
        (db_dir / "version").write_text("table_name(string) table_version(int)\nsubscriber:7\n")
        # Columns that can be empty must be nullable, or db_text refuses the row and every auth fails.
        rows = [
            "id(int,auto) username(string) domain(string,null) password(string) "
            "ha1(string,null) ha1b(string,null)"
        ]
        for row_id, (user, password) in enumerate(sorted(self.users.items()), start=1):
            rows.append(f"{row_id}:{_db_text_value(user)}:{_db_text_value(self.domain)}:"
                        f"{_db_text_value(password)}::")
        (db_dir / "subscriber").write_text("\n".join(rows) + "\n")

    #: The configuration template; a variant (tests/peers/kamailio_blf.py) brings its own.
    template = TEMPLATE

    def _defines(self) -> list[str]:
        defines = []
        if self.challenge_refer:
            defines.append("#!define CHALLENGE_REFER")
        if self.refuse_refer_to:
            defines.append("#!define REFUSE_REFER")
            defines.append(f'#!substdef "!REFUSED_REFER_USERS!({"|".join(self.refuse_refer_to)})!g"')
        return defines

    def _values(self, db_dir: Path) -> dict[str, str]:
        return {
            "defines": "\n".join(self._defines()),
            "port": str(self.port),
            "module_dir": _module_dir(),
            "ctl_socket": str(self._ctl_socket),
            "db_dir": str(db_dir),
        }

    def _render_config(self, db_dir: Path) -> str:
        text = self.template.read_text()
        for key, value in self._values(db_dir).items():
            text = text.replace("{{" + key + "}}", value)
        if "{{" in text:
            raise PeerError(f"unfilled placeholder in {self.template}")
        return text
