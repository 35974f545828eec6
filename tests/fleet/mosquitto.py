"""A real Mosquitto broker on loopback, TLS only, with passwords and per-phone ACLs, and clients to watch it.

:class:`Mosquitto` runs Debian's ``mosquitto`` (2.0.11) in the foreground with a configuration of its own in
``workdir``: a PKI made with ``openssl`` (a CA, a server certificate for 127.0.0.1/localhost, client
certificates on request, and an unrelated CA a phone must refuse), one TLS listener on a free port, no plain
listener, ``allow_anonymous false``, a password file and an ACL file that gives each phone only
``PREFIX/<its user name>/#`` and the fleet operator read on everything and write on the phones' ``cmd``
topics. PKI, users and start take about 60 ms together, so each test can have its own.

:class:`Watcher` is ``mosquitto_sub`` with its JSON output (``-F %j``) read on a thread: what a fleet operator
or a dashboard would see. :meth:`Mosquitto.publish` is ``mosquitto_pub``. Both are the Mosquitto project's own
clients, so a test never proves the phone's MQTT client against itself.

Mosquitto 2.0.11 details the rig relies on (or that a test author would trip over):

* A denied PUBLISH is dropped silently: QoS 0 gets nothing, QoS 1 over MQTT 3.1.1 still gets a PUBACK with
  reason 0; only MQTT 5 clients get reason 0x87 (and ``mosquitto_pub -V mqttv5`` then exits 0 anyway). So a
  test proves "never delivered" with a witness published after the forbidden message, not with a sleep.
* A SUBSCRIBE outside the ACL is granted (SUBACK QoS 0, not 0x80); messages are filtered on delivery.
* With ``require_certificate false`` the broker does not even ask for a client certificate: one from an
  unrelated CA is accepted and ignored. Client certificates count only with ``require_certificate=True``;
  with ``use_identity_as_username=True`` too, the certificate's CN is the user name (for ``%u`` in the ACL)
  and the MQTT user name and password are ignored.
* Run as root, mosquitto drops to the ``mosquitto`` user unless the configuration says ``user root`` (this
  rig names the current user, which has no effect when not root), and then could not read a 0700 workdir.
* ``-F %j`` prints ``{"tst":...,"topic":...,"qos":0,"retain":0,"payloadlen":N,"payload":"..."}``: retain is
  0/1, an empty payload is ``null``, and the payload is printed as a C string (cut at the first NUL byte, raw
  bytes that are not UTF-8 left as they are). ``-v`` is ignored when ``-F`` is given; ``tst`` is malformed
  (``...T18:30:32.845888Z+0000``) and the Watcher leaves it out.
* mosquitto_sub's ``-d`` trace (CONNACK, SUBACK) sits in its stdout buffer until a message comes, when stdout
  is a pipe; the Watcher runs it under ``stdbuf -oL``.
* mosquitto_sub reconnects by itself (about a second later) and subscribes again after a clean broker stop
  (SIGTERM: restart()), but exits with status 7 ("The connection was lost") after kill(): without a TLS
  close_notify, OpenSSL 3 reports "unexpected eof while reading" as an error, not as a closed connection.
* A last will is delivered to live subscribers with retain 0 even when it was sent with ``--will-retain``
  (MQTT 3.1.1's rule for live delivery); a later subscriber gets it with retain 1.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pwd
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tests.peers.support import (
    LOOPBACK,
    ManagedProcess,
    PeerError,
    PeerTimeout,
    free_port,
    require_binary,
    tail,
    wait_until,
)

__all__ = ["DEFAULT_PREFIX", "Message", "Mosquitto", "PeerError", "PeerTimeout", "Watcher", "Will",
           "mosquitto_installed"]

DEFAULT_PREFIX = "firmware-app"
OPERATOR = "operator"
SETUP_HINT = "tests/setup.sh installs mosquitto and mosquitto-clients"
# User names end up in file names, the password file ("user:hash") and the ACL's %u: nothing those treat
# specially (Mosquitto refuses %u patterns for names with + # or /).
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SUBSCRIBED = re.compile(r"^Subscribed \(mid: \d+\): (\d+)")
_CLIENT_TIMEOUT = 10.0
# Elliptic-curve keys: a whole PKI in about 30 ms where RSA keys would take a few hundred.
_KEY_ARGS = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
_DAYS = "3650"

Message = dict[str, Any]
"""One message as a Watcher saw it: ``{"topic": str, "payload": str, "retain": bool, "qos": int}``."""


@dataclass(frozen=True)
class Will:
    """A last will for a Watcher's connection (``--will-topic/--will-payload/--will-qos/--will-retain``)."""

    topic: str
    payload: str
    retain: bool = True
    qos: int = 1


def mosquitto_installed() -> bool:
    try:
        for binary in ("mosquitto", "mosquitto_passwd", "mosquitto_sub", "mosquitto_pub", "openssl"):
            require_binary(binary)
    except PeerError:
        return False
    return True


def _run(argv: Sequence[str], what: str, *,
         timeout: float = _CLIENT_TIMEOUT) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise PeerTimeout(f"{what} timed out after {timeout:.1f} s: {' '.join(argv)}") from exc
    if done.returncode != 0:
        raise PeerError(f"{what} failed (status {done.returncode}): {(done.stderr or done.stdout).strip()}")
    return done


class Mosquitto:
    """Mosquitto 2.0.11 on 127.0.0.1:PORT, TLS only, users from add_user(), each phone confined to its subtree.

    The ACL: ``pattern readwrite PREFIX/%u/#`` for every user, and the operator (user name ``operator``)
    may also read ``PREFIX/#`` and write ``PREFIX/+/cmd/#``. Users are added before start(). The PKI is made
    at construction, so ``ca_file``, ``wrong_ca_file`` and client_cert() work before start().
    """

    host = LOOPBACK

    def __init__(self, workdir: Path, *, prefix: str = DEFAULT_PREFIX, require_certificate: bool = False,
                 use_identity_as_username: bool = False) -> None:
        if not prefix or "+" in prefix or "#" in prefix or prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError(f"prefix {prefix!r} must be a topic without wildcards or a leading/trailing '/'")
        if use_identity_as_username and not require_certificate:
            raise ValueError("use_identity_as_username needs require_certificate")
        self.workdir = Path(workdir)
        self.prefix = prefix
        self.require_certificate = require_certificate
        self.use_identity_as_username = use_identity_as_username
        self.users: dict[str, str] = {}
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        # stdout/stderr: what mosquitto says before its log file is open (a configuration it refuses).
        self.output_path = self.workdir / "mosquitto.out"
        self.password_path = self.workdir / "passwords"
        self.acl_path = self.workdir / "acl"
        self._pki = self.workdir / "pki"
        self._port: int | None = None
        self._process: ManagedProcess | None = None
        self._binary = require_binary("mosquitto")
        self._openssl = require_binary("openssl")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._make_pki()

    # -- PKI ---------------------------------------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        """The CA that signed the broker's certificate (and the client certificates)."""
        return self._pki / "ca.crt"

    @property
    def wrong_ca_file(self) -> Path:
        """A CA unrelated to the broker's: a client that trusts only this one must refuse the broker."""
        return self._pki / "wrong-ca.crt"

    @property
    def server_cert_file(self) -> Path:
        return self._pki / "server.crt"

    def client_cert(self, name: str) -> tuple[Path, Path]:
        """Issue (once) a client certificate with CN=name signed by the broker's CA: (cert path, key path)."""
        self._check_name(name)
        cert, key = self._pki / f"client-{name}.crt", self._pki / f"client-{name}.key"
        if not cert.exists():
            self._issue(cert, key, name, self._pki / "ca", "extendedKeyUsage=clientAuth\n")
        return cert, key

    def _make_pki(self) -> None:
        self._pki.mkdir(exist_ok=True)
        for ca, subject in ((self._pki / "ca", "firmware-app test broker CA"),
                            (self._pki / "wrong-ca", "firmware-app unrelated CA")):
            if not ca.with_suffix(".crt").exists():
                _run([self._openssl, "req", "-x509", *_KEY_ARGS, "-keyout", str(ca.with_suffix(".key")),
                      "-out", str(ca.with_suffix(".crt")), "-days", _DAYS, "-subj", f"/CN={subject}",
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign"], "openssl (CA)")
        server = self._pki / "server.crt"
        if not server.exists():
            self._issue(server, self._pki / "server.key", "localhost", self._pki / "ca",
                        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")

    def _issue(self, cert: Path, key: Path, common_name: str, ca: Path, extensions: str) -> None:
        csr, ext = cert.with_suffix(".csr"), cert.with_suffix(".ext")
        ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                       + extensions)
        _run([self._openssl, "req", *_KEY_ARGS, "-keyout", str(key), "-out", str(csr),
              "-subj", f"/CN={common_name}"], "openssl (request)")
        _run([self._openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca.with_suffix(".crt")),
              "-CAkey", str(ca.with_suffix(".key")), "-set_serial", str(time.time_ns()), "-days", _DAYS,
              "-extfile", str(ext), "-out", str(cert)], "openssl (sign)")

    # -- users ---------------------------------------------------------------------------------------------

    def add_user(self, name: str, password: str) -> None:
        """Add a user to the password file (mosquitto_passwd -b); before start(), which reads it once."""
        self._check_name(name)
        if self._process is not None:
            raise PeerError("add users before start(): Mosquitto reads its password file at start")
        if not password or "\n" in password:
            raise ValueError("the password must be one non-empty line")
        self.password_path.touch()  # mosquitto_passwd -b refuses a file that does not exist yet
        _run([require_binary("mosquitto_passwd"), "-b", str(self.password_path), name, password],
             "mosquitto_passwd")
        self.users[name] = password

    @staticmethod
    def _check_name(name: str) -> None:
        if not _SAFE_NAME.fullmatch(name):
            raise ValueError(f"name {name!r} must match {_SAFE_NAME.pattern}")

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Self:
        """Start the broker (on the previous port after a stop) and wait until it accepts TLS connections."""
        if self._process is not None:
            raise PeerError("Mosquitto was already started")
        self._port = self._port or free_port(udp=False)
        self.password_path.touch()
        self.acl_path.write_text(self._render_acl())
        self.config_path.write_text(self._render_config())
        self.log_path.touch()
        log_start = self.log_path.stat().st_size  # the log is kept across restarts
        self._process = ManagedProcess("mosquitto", [self._binary, "-c", str(self.config_path)], self.output_path,
                                       cwd=self.workdir)
        opened = f"Opening ipv4 listen socket on port {self._port}."
        try:
            self._process.start()
            wait_until(lambda: opened in self._log_text(log_start) and self._accepts_tcp(), timeout,
                       f"Mosquitto to listen on {self.host}:{self._port}", interval=0.01, alive=self._check_alive)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM (a clean shutdown: clients see the connection close); safe to call more than once."""
        if self._process is not None:
            self._process.stop()
            self._process = None

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a word, as on a power cut."""
        if self._process is not None and self._process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
        self.stop()

    def restart(self, down_for: float = 0.0, timeout: float = 10.0) -> Self:
        """Stop, stay down ``down_for`` seconds, start again on the same port (no persistence: retained
        messages and sessions are lost; clients must reconnect)."""
        self.stop()
        time.sleep(down_for)
        return self.start(timeout)

    def running(self) -> bool:
        return self._process is not None and self._process.running()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- addresses and logs --------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise PeerError("Mosquitto was never started")
        return self._port

    def log(self) -> str:
        """The broker's whole log (log_type all, with connection messages), across restarts."""
        return self._log_text(0)

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    # -- clients -------------------------------------------------------------------------------------------

    def client_args(self, user: str | None, password: str | None, *, cafile: Path | None = None,
                    cert: tuple[Path, Path] | None = None) -> list[str]:
        """The connection arguments for mosquitto_sub/mosquitto_pub: host, port, CA, credentials."""
        args = ["-h", self.host, "-p", str(self.port), "--cafile", str(cafile or self.ca_file)]
        if cert is not None:
            args += ["--cert", str(cert[0]), "--key", str(cert[1])]
        if user is not None:
            args += ["-u", user]
        if password is not None:
            args += ["-P", password]
        return args

    def publish(self, user: str | None, password: str | None, topic: str, payload: str, retain: bool = False,
                *, qos: int = 1, cert: tuple[Path, Path] | None = None, timeout: float = _CLIENT_TIMEOUT) -> None:
        """Publish one message with mosquitto_pub. With QoS 1 (the default) it returns once the broker has
        taken the message, so a later publish from anyone is delivered after it. The broker dropping it for
        the ACL is not an error (MQTT 3.1.1 cannot say so)."""
        argv = [require_binary("mosquitto_pub"), *self.client_args(user, password, cert=cert), "-t", topic,
                "-q", str(qos)]
        argv += ["-m", payload] if payload else ["-n"]
        if retain:
            argv.append("-r")
        try:
            _run(argv, f"mosquitto_pub to {topic} as {user}", timeout=timeout)
        except PeerError as exc:
            raise PeerError(f"{exc}\nend of {self.log_path}:\n{self.log_tail()}") from exc

    # -- internals -----------------------------------------------------------------------------------------

    def _log_text(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _accepts_tcp(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _check_alive(self) -> None:
        if self._process is None:
            raise PeerError("Mosquitto is not started")
        try:
            self._process.check_alive()
        except PeerError as exc:
            raise PeerError(f"{exc}\nend of {self.log_path}:\n{self.log_tail()}") from None

    def _render_acl(self) -> str:
        # Pattern lines apply to every user wherever they stand; topic lines to the user line above them.
        return (f"# Each phone: only its own subtree (%u is the MQTT user name, or the certificate's CN),\n"
                f"# and its own Home Assistant discovery configs (homeassistant/COMPONENT/DEVICE/...).\n"
                f"pattern readwrite {self.prefix}/%u/#\n"
                f"pattern write homeassistant/+/%u/#\n\n"
                f"# The fleet operator: reads everything, writes only the phones' command topics.\n"
                f"user {OPERATOR}\n"
                f"topic read {self.prefix}/#\n"
                f"topic read homeassistant/#\n"
                f"topic write {self.prefix}/+/cmd/#\n")

    def _render_config(self) -> str:
        return "\n".join([
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self.password_path}",
            f"acl_file {self.acl_path}",
            "persistence false",
            # Run as root, mosquitto would switch to the 'mosquitto' user; as anyone else this has no effect.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            f"log_dest file {self.log_path}",
            "log_type all",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "",
            "# The only listener: TLS on loopback (no plain MQTT anywhere).",
            f"listener {self.port} {self.host}",
            f"cafile {self.ca_file}",
            f"certfile {self.server_cert_file}",
            f"keyfile {self._pki / 'server.key'}",
            f"require_certificate {str(self.require_certificate).lower()}",
            f"use_identity_as_username {str(self.use_identity_as_username).lower()}",
            "",
        ])


class Watcher:
    """``mosquitto_sub -F %j`` connected as ``user``, subscribed to ``topic``; messages collected on a thread.

    The constructor returns once the broker has acknowledged the subscription (so anything published after
    it is seen), or raises PeerError with what mosquitto_sub said (refused password, TLS error...). With
    ``will``, the connection carries a last will: kill() the watcher to have the broker publish it.
    mosquitto_sub reconnects and subscribes again by itself after restart() (see subscriptions), not after
    kill() (it exits: see the module's notes). A watcher left running is stopped by stop_all() (the fleet
    tests' conftest calls it after each test) or at exit: mosquitto_sub would otherwise retry forever.
    """

    _live: set[Watcher] = set()
    _live_lock = threading.Lock()

    @classmethod
    def stop_all(cls) -> None:
        """Stop every watcher still running (a test's teardown; at exit)."""
        with cls._live_lock:
            live = list(cls._live)
        for watcher in live:
            watcher.stop()

    def __init__(self, mosquitto: Mosquitto, user: str | None, password: str | None, topic: str = "#", *,
                 will: Will | None = None, cert: tuple[Path, Path] | None = None,
                 cafile: Path | None = None, timeout: float = _CLIENT_TIMEOUT) -> None:
        self.mosquitto = mosquitto
        self.user = user
        self.topic = topic
        # -d: its trace says when the SUBACK came, so when the subscription holds. That trace is printed with
        # stdio and flushed only with the next message: stdbuf makes stdout line-buffered.
        argv = [require_binary("stdbuf"), "-oL", require_binary("mosquitto_sub"),
                *mosquitto.client_args(user, password, cert=cert, cafile=cafile),
                "-t", topic, "-v", "-F", "%j", "-d"]
        if will is not None:
            argv += ["--will-topic", will.topic, "--will-payload", will.payload, "--will-qos", str(will.qos)]
            if will.retain:
                argv.append("--will-retain")
        self._messages: list[Message] = []
        self._transcript: list[str] = []
        self._subscriptions = 0
        self._refused = False
        self._changed = threading.Condition()
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        with Watcher._live_lock:
            Watcher._live.add(self)
        self._reader = threading.Thread(target=self._read, name=f"watcher-{user}", daemon=True)
        self._reader.start()
        try:
            self.wait_subscribed(1, timeout)
        except BaseException:
            self.stop()
            raise

    # -- what it saw -------------------------------------------------------------------------------------

    def messages(self) -> list[Message]:
        """Every message so far, in the order received: dicts with topic, payload (str), retain, qos."""
        with self._changed:
            return list(self._messages)

    def topics(self) -> list[str]:
        return [m["topic"] for m in self.messages()]

    @property
    def subscriptions(self) -> int:
        """How many times the broker acknowledged the subscription: 1, plus one per reconnection."""
        with self._changed:
            return self._subscriptions

    def transcript(self) -> str:
        """What mosquitto_sub printed besides the messages (its -d protocol trace and errors)."""
        with self._changed:
            return "\n".join(self._transcript)

    def wait(self, predicate: Callable[[Message], bool], timeout: float = 5.0) -> Message:
        """Return the first message (seen so far or to come) that matches, waiting at most ``timeout`` s."""
        return self._wait_for(lambda: next((m for m in self._messages if predicate(m)), None), timeout,
                              "a matching message")

    def wait_topic(self, topic: str, payload: str | None = None, timeout: float = 5.0) -> Message:
        return self.wait(lambda m: m["topic"] == topic and (payload is None or m["payload"] == payload), timeout)

    def wait_subscribed(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until the subscription has been acknowledged ``count`` times (count=2: after a reconnect)."""
        self._wait_for(lambda: self._subscriptions >= count or None, timeout,
                       f"subscription #{count} to {self.topic!r} as {self.user}")

    # -- lifecycle ---------------------------------------------------------------------------------------

    def running(self) -> bool:
        return self._proc.poll() is None

    def stop(self, timeout: float = 5.0) -> int | None:
        """Disconnect cleanly (SIGTERM: mosquitto_sub sends DISCONNECT, so no will); returns the exit status."""
        return self._end(signal.SIGTERM, timeout)

    def kill(self, timeout: float = 5.0) -> int | None:
        """Die without DISCONNECT (SIGKILL), as a crashed phone: the broker publishes the will at once."""
        return self._end(signal.SIGKILL, timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------------------------

    def _end(self, sig: signal.Signals, timeout: float) -> int | None:
        with Watcher._live_lock:
            Watcher._live.discard(self)
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout)
        self._reader.join(timeout)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        return self._proc.returncode

    def _wait_for(self, probe: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = probe()
                if found is not None and found is not False:
                    return found
                if self._refused:
                    raise PeerError(f"the broker refused the subscription to {self.topic!r} as {self.user}: "
                                    f"{self._describe()}")
                if not self._reader.is_alive():
                    raise PeerError(f"mosquitto_sub as {self.user} exited (status {self._proc.poll()}) before "
                                    f"{what}: {self._describe()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PeerTimeout(f"timed out after {timeout:.1f} s waiting for {what} on {self.topic!r} as "
                                      f"{self.user}: {self._describe()}")
                self._changed.wait(left)

    def _describe(self) -> str:
        seen = "\n".join(f"  {m['topic']} {m['payload']!r}{' (retained)' if m['retain'] else ''}"
                         for m in self._messages[-30:]) or "  (none)"
        return (f"\nmessages seen ({len(self._messages)}):\n{seen}\n"
                f"mosquitto_sub said:\n" + "\n".join(self._transcript[-15:]) + "\n"
                f"end of {self.mosquitto.log_path}:\n{self.mosquitto.log_tail(15)}")

    def _read(self) -> None:
        assert self._proc.stdout is not None
        try:
            for raw in self._proc.stdout:
                # The payload is printed raw inside the JSON string: bytes that are not UTF-8 become U+FFFD.
                line = raw.decode(errors="replace").rstrip("\n")
                with self._changed:
                    self._take(line)
                    self._changed.notify_all()
        finally:
            with self._changed:
                self._changed.notify_all()

    def _take(self, line: str) -> None:
        if line.startswith("{"):
            try:
                data = json.loads(line, strict=False)
            except ValueError:
                self._transcript.append(f"(unparsable JSON) {line}")
                return
            self._messages.append({"topic": data["topic"], "payload": data.get("payload") or "",
                                   "retain": bool(data.get("retain")), "qos": int(data.get("qos", 0))})
            return
        self._transcript.append(line)
        subscribed = _SUBSCRIBED.match(line)
        if subscribed:
            if int(subscribed.group(1)) >= 0x80:
                self._refused = True
            else:
                self._subscriptions += 1


atexit.register(Watcher.stop_all)
