"""The real bluealsa, without a Bluetooth radio, and headsets played against it.

On the phone, bluealsa (Debian's bluez-alsa-utils 4.0.0, run as ``bluealsa -p hfp-ag -p hsp-ag``) is the audio
gateway for the users' headsets: BlueZ hands it each headset's RFCOMM link, it runs the service-level
connection itself and lends the rest of the dialogue to the phone through ``org.bluealsa.RFCOMM1.Open()``.
This rig runs that same daemon on a private system bus (its own ``dbus-daemon``), beside a fake ``org.bluez``
(tests/hfp/fake_bluez_ag.py) that gives it an adapter and records its profiles. :meth:`Bluealsa.connect` then
does what BlueZ does when a headset connects: ``Profile1.NewConnection`` with one end of a socketpair. The
other end is the :class:`Headset`, which the test plays: AT commands out, result codes in.

The rig's D-Bus connection and the headsets' reads live on an asyncio loop of the rig's own, on a thread, so
the API is synchronous for plain tests and never blocks the loop of an async test where the phone runs (use
the ``*_async`` twins there for anything that waits). SCO audio cannot be opened this way (no radio).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from dbus_fast import Message, MessageType

from tests.hfp.fake_bluez_ag import ADAPTER, HFP_AG_UUID, HSP_AG_UUID, FakeBluez
from tests.inputs.fake_bluez import BUS_CONFIG

T = TypeVar("T")

# A headset's HFP features (AT+BRSF): EC/NR, caller ID, voice recognition, remote volume. No three-way
# calling and no codec negotiation, so the SLC is BRSF, CIND=?, CIND?, CMER and nothing more.
HF_FEATURES = 1 | 4 | 8 | 16
PROFILE_UUIDS = {"HFP": HFP_AG_UUID, "HSP": HSP_AG_UUID}
RFCOMM = "org.bluealsa.RFCOMM1"
NOT_INSTALLED = "bluez-alsa-utils is not installed (tests/setup.sh installs it)"


def bluealsa_installed() -> bool:
    return shutil.which("bluealsa") is not None


def device_path(address: str, adapter: str = ADAPTER) -> str:
    """BlueZ's object path for the headset at ``address``."""
    return f"/org/bluez/{adapter}/dev_{address.upper().replace(':', '_')}"


class _LoopThread:
    """An asyncio loop on a thread of its own, where the rig's D-Bus and the headsets' sockets are served."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="bluealsa-rig", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coro`` on the rig's loop and wait for its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return self.run(call())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class Headset:
    """The headset's end of its RFCOMM link to bluealsa: it sends AT commands and reads result codes.

    What the AG writes is split into lines (``b"\\r\\nOK\\r\\n"`` is the line ``"OK"``) as it arrives, on the
    rig's thread; :meth:`expect` and :meth:`take` consume them in order.
    """

    def __init__(
        self, rig: _LoopThread, sock: socket.socket, address: str, transport: str, log: Callable[[], str]
    ) -> None:
        self.address, self.transport = address, transport
        self.device_path = device_path(address)
        self.rfcomm_path = self.device_path.replace("/org/bluez/", "/org/bluealsa/", 1) + "/rfcomm"
        self._rig, self._sock, self._log = rig, sock, log
        self._lines: list[str] = []
        self._buffer = b""
        self._link_lost = False  # the AG closed the link
        self._closed = False  # the headset closed it
        self._received = threading.Condition()
        sock.setblocking(False)
        rig.call(lambda: rig.loop.add_reader(sock.fileno(), self._on_readable))

    def send(self, command: str) -> None:
        """Send one AT command (``"ATA"``, ``"AT+CKPD=200"``); the ``\\r`` is added."""
        self._sock.sendall(command.encode() + b"\r")

    def expect(self, line: str, timeout: float = 5.0) -> list[str]:
        """Wait for the line ``line`` from the AG; return the lines received up to it and including it.

        Lines after it stay for the next :meth:`expect` or :meth:`take`. On timeout, or if the AG closes the
        link first, fail with what was received and the end of bluealsa's log.
        """
        deadline = time.monotonic() + timeout
        with self._received:
            while line not in self._lines:
                left = deadline - time.monotonic()
                if left <= 0 or self._link_lost:
                    why = "the AG closed the link" if self._link_lost else f"nothing more within {timeout} s"
                    raise AssertionError(self._failure(f"no {line!r} ({why}); received {self._lines}"))
                self._received.wait(left)
            end = self._lines.index(line) + 1
            lines, self._lines = self._lines[:end], self._lines[end:]
            return lines

    async def expect_async(self, line: str, timeout: float = 5.0) -> list[str]:
        """:meth:`expect`, waited for without blocking the caller's loop."""
        return await asyncio.to_thread(self.expect, line, timeout)

    def wait_forwarded(self, tries: int = 50) -> None:
        """Wait until bluealsa forwards to the channel's holder (the phone): for a moment after its Open()
        bluealsa still answers ERROR itself. The probe is a bare AT, which the phone answers OK."""
        for _ in range(tries):
            self.send("AT")
            try:
                self.expect("OK", timeout=0.2)
                return
            except AssertionError:
                continue
        raise AssertionError(self._failure("bluealsa never forwarded the headset's AT to the phone"))

    async def wait_forwarded_async(self) -> None:
        await asyncio.to_thread(self.wait_forwarded)

    def take(self) -> list[str]:
        """The lines received and not yet consumed (consumes them)."""
        with self._received:
            lines, self._lines = self._lines, []
            return lines

    def expect_link_lost(self, timeout: float = 5.0) -> list[str]:
        """Wait until the AG closes the link (bluealsa disconnected the headset, or died); the lines not
        consumed before."""
        with self._received:
            if not self._received.wait_for(lambda: self._link_lost, timeout):
                raise AssertionError(self._failure(f"the link is still up after {timeout} s"))
        return self.take()

    def slc(self, features: int = HF_FEATURES) -> None:
        """Establish the service-level connection as a headset does, waiting for each answer.

        HFP: ``AT+BRSF``, ``AT+CIND=?``, ``AT+CIND?``, ``AT+CMER=3,0,0,1``. HSP has no SLC: bluealsa counts
        the link as connected at once, so nothing is sent (a real HSP headset may volunteer ``AT+VGS=...``).
        The lines of the exchange are consumed.
        """
        if self.transport != "HFP":
            return
        self.send(f"AT+BRSF={features}")
        brsf = self.expect("OK")
        assert any(line.startswith("+BRSF:") for line in brsf), self._failure(f"AT+BRSF answered {brsf}")
        for command in ("AT+CIND=?", "AT+CIND?", "AT+CMER=3,0,0,1"):
            self.send(command)
            self.expect("OK")

    async def slc_async(self, features: int = HF_FEATURES) -> None:
        """:meth:`slc`, without blocking the caller's loop."""
        await asyncio.to_thread(self.slc, features)

    def close(self) -> None:
        """The headset goes away: its end of the link is closed (bluealsa then drops the connection)."""
        if self._closed:
            return
        self._closed = True
        if not self._rig.loop.is_closed():
            self._rig.call(lambda: self._rig.loop.remove_reader(self._sock.fileno()))
        self._sock.close()

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        with self._received:
            if not data:
                self._link_lost = True
                self._rig.loop.remove_reader(self._sock.fileno())
            self._buffer += data
            *frames, self._buffer = self._buffer.split(b"\r\n")
            self._lines += [frame.decode(errors="replace") for frame in frames if frame]
            self._received.notify_all()

    def _failure(self, what: str) -> str:
        tail = "\n".join(self._log().splitlines()[-25:])
        return f"headset {self.address} ({self.transport}): {what}\n--- bluealsa's log (end) ---\n{tail}"


class Bluealsa:
    """A private system bus, a fake ``org.bluez`` on it, and the real ``bluealsa -p hfp-ag -p hsp-ag``.

    :meth:`start` returns when bluealsa has registered both profiles; :meth:`stop` ends everything it
    started and removes its directory.
    """

    adapter = ADAPTER

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="bluealsa-rig-"))  # short: a socket path has 108 bytes
        self.bus_address = f"unix:path={self.workdir / 'system_bus.sock'}"
        self._log_path = self.workdir / "bluealsa.log"
        self._dbus: subprocess.Popen[bytes] | None = None
        self._bluealsa: subprocess.Popen[bytes] | None = None
        self._rig: _LoopThread | None = None
        self._fake: FakeBluez | None = None
        self._headsets: list[Headset] = []
        self._holders: list[socket.socket] = []
        self._final_log = ""

    def start(self) -> Bluealsa:
        try:
            self._start_bus()
            self._rig = _LoopThread()
            self._fake = self._rig.run(FakeBluez.serve(self.bus_address))
            self._start_bluealsa()
        except BaseException:
            self.stop()  # never leave a bus or a daemon behind
            raise
        return self

    def connect(self, address: str = "00:11:22:33:44:55", transport: str = "HFP") -> Headset:
        """A headset at ``address`` connects with ``transport`` ("HFP" or "HSP"): BlueZ hands bluealsa the
        RFCOMM link (``org.bluez.Profile1.NewConnection``) and the headset keeps the other end. bluealsa
        exports the link's ``org.bluealsa.RFCOMM1`` object before this returns."""
        rig, fake = self._running()
        profile = fake.profiles[PROFILE_UUIDS[transport]]
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            call = Message(
                destination=profile.owner,
                path=profile.path,
                interface="org.bluez.Profile1",
                member="NewConnection",
                signature="oha{sv}",
                body=[device_path(address), 0, {}],
                unix_fds=[theirs.fileno()],
            )
            reply = rig.run(fake.bus.call(call))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # bluealsa has its own copy now
        if reply.message_type is MessageType.ERROR:
            ours.close()
            raise RuntimeError(f"NewConnection failed: {reply.error_name} {reply.body}\n{self.log()}")
        headset = Headset(rig, ours, address, transport, self.log)
        self._headsets.append(headset)
        return headset

    async def connect_async(self, address: str = "00:11:22:33:44:55", transport: str = "HFP") -> Headset:
        """:meth:`connect`, without blocking the caller's loop."""
        return await asyncio.to_thread(self.connect, address, transport)

    def rfcomm_objects(self) -> list[str]:
        """The object paths bluealsa serves ``org.bluealsa.RFCOMM1`` at (one per connected headset)."""
        return sorted(path for path, interfaces in self._managed_objects().items() if RFCOMM in interfaces)

    def rfcomm_properties(self, path: str) -> dict[str, Any]:
        """The ``org.bluealsa.RFCOMM1`` properties of ``path`` (``Transport``, ``Features``, ``Battery``)."""
        return {name: variant.value for name, variant in self._managed_objects()[path][RFCOMM].items()}

    def open_rfcomm(self, headset: Headset) -> socket.socket:
        """Take ``headset``'s link as another program would (``org.bluealsa.RFCOMM1.Open()``): the SEQPACKET
        socket bluealsa lends, blocking, the caller's to close (the rig closes it at :meth:`stop` otherwise)."""
        rig, fake = self._running()
        call = Message(destination="org.bluealsa", path=headset.rfcomm_path, interface=RFCOMM, member="Open")
        reply = rig.run(fake.bus.call(call))
        if reply.message_type is MessageType.ERROR:
            raise RuntimeError(f"Open() failed: {reply.error_name} {reply.body}")
        holder = socket.socket(fileno=reply.unix_fds[0])  # dbus-fast keeps no other copy of the fd
        self._holders.append(holder)
        return holder

    def kill(self) -> None:
        """bluealsa dies (SIGKILL): every headset link it held closes; org.bluez forgets its profiles."""
        proc, self._bluealsa = self._bluealsa, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if self._rig is not None and self._fake is not None:
            self._rig.call(self._fake.forget)

    def restart(self) -> None:
        """bluealsa is killed (if running) and started again on the same bus; returns when it has
        registered its profiles again."""
        self.kill()
        self._start_bluealsa()

    async def restart_async(self) -> None:
        """:meth:`restart`, without blocking the caller's loop."""
        await asyncio.to_thread(self.restart)

    def log(self) -> str:
        """bluealsa's output so far, every run of it (4.0.0 as Debian builds it logs debug lines)."""
        if self._log_path.exists():
            return self._log_path.read_text(errors="replace")
        return self._final_log

    def stop(self) -> None:
        """Close the headsets, stop bluealsa, org.bluez and the bus, and remove the rig's directory."""
        for headset in self._headsets:
            headset.close()
        self._headsets.clear()
        for holder in self._holders:
            holder.close()
        self._holders.clear()
        self.kill()
        if self._rig is not None:
            if self._fake is not None:
                self._rig.call(self._fake.close)
                self._fake = None
            self._rig.close()
            self._rig = None
        if self._dbus is not None:
            self._dbus.terminate()
            try:
                self._dbus.wait(5)
            except subprocess.TimeoutExpired:
                self._dbus.kill()
                self._dbus.wait()
            if self._dbus.stdout is not None:
                self._dbus.stdout.close()
            self._dbus = None
        self._final_log = self.log()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _start_bus(self) -> None:
        daemon = shutil.which("dbus-daemon")
        if daemon is None:
            raise RuntimeError("dbus-daemon is not installed: run tests/setup.sh (Debian package dbus-daemon)")
        conf = self.workdir / "bus.conf"
        conf.write_text(BUS_CONFIG.format(socket=self.workdir / "system_bus.sock"))  # as the BLE tests' bus
        with (self.workdir / "dbus.log").open("wb") as log:
            self._dbus = subprocess.Popen(
                [daemon, f"--config-file={conf}", "--nofork", "--print-address"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
            )
        assert self._dbus.stdout is not None
        if not self._dbus.stdout.readline():  # it prints its address once it listens
            raise RuntimeError("the private dbus-daemon did not start")

    def _start_bluealsa(self) -> None:
        rig, fake = self._running()
        if not bluealsa_installed():
            raise RuntimeError(NOT_INSTALLED)
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.bus_address}
        with self._log_path.open("ab") as log:
            self._bluealsa = subprocess.Popen(
                ["bluealsa", "-p", "hfp-ag", "-p", "hsp-ag", "-i", ADAPTER],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                rig.run(fake.wait_profiles(HFP_AG_UUID, HSP_AG_UUID, timeout=0.1))
                return
            except TimeoutError:
                if self._bluealsa.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"bluealsa did not register its profiles:\n{self.log()}") from None

    def _managed_objects(self) -> dict[str, dict[str, dict[str, Any]]]:
        rig, fake = self._running()
        call = Message(
            destination="org.bluealsa",
            path="/org/bluealsa",
            interface="org.freedesktop.DBus.ObjectManager",
            member="GetManagedObjects",
        )
        reply = rig.run(fake.bus.call(call))
        if reply.message_type is MessageType.ERROR:
            raise RuntimeError(f"GetManagedObjects on org.bluealsa failed: {reply.error_name} {reply.body}")
        return reply.body[0]

    def _running(self) -> tuple[_LoopThread, FakeBluez]:
        if self._rig is None or self._fake is None:
            raise RuntimeError("the rig is not started")
        return self._rig, self._fake
