"""The two phones under measurement (the app and the baseline script), the caller, and the wire's clock."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.peers.baresip import Baresip
from tests.peers.kamailio import Kamailio
from tests.peers.ladder import SipMessage

REPO = Path(__file__).resolve().parents[1]
PIN = 17
HOLD_MS = 50  # how long the bench holds the button down: more than the app's min_press_ms (30)


class BenchError(RuntimeError):
    pass


def wait(predicate: Any, timeout: float, what: str, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def device_alsa_conf(work: Path) -> Path:
    """alsa-lib's own alsa.conf without the conf.d folders: the ALSA of the device image (libasound2 alone).

    This machine has libasound2-plugins and PulseAudio (for the audio tests): their conf.d files make PJSUA's
    libInit load the pulse, jack, speex... plugins (about 6 MB of RSS) that the image does not have.
    """
    text = Path("/usr/share/alsa/alsa.conf").read_text()
    text = re.sub(r'^\s*"[^"]*/conf\.d"\s*$\n', "", text, flags=re.MULTILINE)
    path = work / "alsa.conf"
    path.write_text(text)
    return path


# --- the wire: Kamailio's log ------------------------------------------------------------------------------


class Wire:
    """Kamailio's ladder lines, read incrementally: when each message reached the proxy ($TV(Sn))."""

    def __init__(self, kamailio: Kamailio) -> None:
        self.path = kamailio.log_path
        self._offset = 0
        self.answers: dict[str, float] = {}  # Call-ID -> first "200 OK" to its INVITE received from the callee
        self.registered: list[tuple[float, str]] = []  # (time, user) of each 200 the registrar sent to a REGISTER
        self.caller_sources: set[str] = set()

    def poll(self) -> None:
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        complete, newline, _ = chunk.rpartition(b"\n")
        if not newline:
            return
        self._offset += len(complete) + 1
        for line in complete.decode(errors="replace").splitlines():
            m = SipMessage.from_log_line(line)
            if m is None:
                continue
            if m.kind == "reply" and m.method == "INVITE" and m.status == 200 and m.source not in self.caller_sources:
                if m.call_id not in self.answers or m.time < self.answers[m.call_id]:
                    self.answers[m.call_id] = m.time
            elif m.kind == "local-reply" and m.method == "REGISTER" and m.status == 200 and m.to_user:
                self.registered.append((m.time, m.to_user))

    def register_ok_after(self, user: str, since: float) -> float | None:
        self.poll()
        times = [t for t, u in self.registered if u == user and t >= since]
        return min(times) if times else None


# --- the phones -------------------------------------------------------------------------------------------


class Phone:
    """What the bench needs from a phone process, app or baseline."""

    name: str
    kind: str  # "app" or "baseline"
    deciding_edge: str  # "press" or "release": the pin edge after which the phone answers
    process: subprocess.Popen[bytes] | None
    user: str
    started_at: float = 0.0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["GPIOZERO_PIN_FACTORY"] = "mock"
    env.update(extra or {})
    return env


class AppPhone(Phone):
    """``firmware-app run`` as a subprocess, driven over its control socket (one persistent connection)."""

    kind = "app"
    deciding_edge = "release"  # the gesture recognizer knows a single press (not a long one) at the release

    def __init__(self, workdir: Path, kamailio: Kamailio, user: str, password: str, body: str,
                 env: dict[str, str] | None = None, name: str = "app") -> None:
        self.name, self.user = name, user
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket_path = workdir / "control.sock"
        self.config = workdir / "config.toml"
        self.config.write_text(
            f'[account]\nregistrar = "{kamailio.domain}"\nuser = "{user}"\nlocal_port = 0\n\n'
            f'[control]\nsocket = "{self.socket_path}"\n\n{body}'
        )
        secrets = workdir / "secrets.toml"
        secrets.write_text(f'password = "{password}"\n')
        secrets.chmod(0o600)
        self.env = _env(env)
        self.process = None
        self._sock: socket.socket | None = None
        self._reader: Any = None

    def start(self) -> float:
        self.socket_path.unlink(missing_ok=True)
        log = open(self.workdir / "phone.log", "ab")  # noqa: SIM115
        argv = [sys.executable, "-m", "firmware_app.cli", "-c", str(self.config), "run"]
        self.started_at = time.time()
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        log.close()
        return self.started_at

    def connect(self, timeout: float = 15.0) -> None:
        wait(lambda: self.socket_path.exists() or not self.alive(), timeout, f"{self.name}'s control socket")
        if not self.alive():
            raise BenchError(f"{self.name} exited: see {self.workdir / 'phone.log'}")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(str(self.socket_path))
        self._reader = self._sock.makefile("rb")

    def request(self, message: dict[str, Any]) -> Any:
        assert self._sock is not None
        self._sock.sendall(json.dumps(message).encode() + b"\n")
        reply = json.loads(self._reader.readline())
        if not reply.get("ok"):
            raise BenchError(f"{self.name}: {message} -> {reply.get('error')}")
        return reply.get("result")

    def registered(self) -> bool:
        return self.request({"cmd": "status"})["registration"]["state"] == "registered"

    def press_control(self) -> float:
        """The control socket's press (the same path as a button, after the gesture): returns when sent."""
        line = b'{"cmd": "press", "button": "main", "gesture": "single"}\n'
        assert self._sock is not None
        sent = time.time()
        self._sock.sendall(line)
        reply = json.loads(self._reader.readline())  # comes once the action ran, after the 200 OK was sent
        if not reply.get("ok") or reply["result"].get("action") != "answer":
            raise BenchError(f"{self.name}: press -> {reply}")
        return sent

    def press_pin(self, tag: str) -> None:
        self.request({"cmd": "action", "name": f"bench_press:{PIN}:{HOLD_MS}:{tag}"})

    def edges(self, tag: str, timeout: float = 2.0) -> list[float]:
        found: dict[str, list[float]] = {}

        def fetch() -> bool:
            found.update(self.request({"cmd": "action", "name": "bench_edges"}))
            return tag in found

        wait(fetch, timeout, f"{self.name}'s pin edges", interval=0.02)
        return found[tag]

    def trim(self) -> None:
        self.request({"cmd": "action", "name": "bench_trim"})

    def probes(self) -> list[float]:
        return self.request({"cmd": "action", "name": "bench_probes"})

    def disconnect(self) -> None:
        if self._sock is not None:
            self._reader.close()
            self._sock.close()
            self._sock = None

    def stop(self, timeout: float = 10.0) -> None:
        self.disconnect()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class BaselinePhone(Phone):
    """bench/baseline.py as a subprocess: commands on its stdin, edge times and registration on its stdout."""

    kind = "baseline"
    deciding_edge = "press"  # gpiozero's when_pressed puts the answer on the queue at the press

    def __init__(self, workdir: Path, kamailio: Kamailio, user: str, password: str,
                 env: dict[str, str] | None = None, name: str = "baseline") -> None:
        self.name, self.user = name, user
        self.env = _env(env)
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.argv = [sys.executable, str(REPO / "bench" / "baseline.py"), "--registrar", kamailio.domain,
                     "--user", user, "--password", password, "--pin", str(PIN)]
        self.process = None
        self._edges: dict[str, list[float]] = {}
        self._registered = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> float:
        log = open(self.workdir / "baseline.log", "ab")  # noqa: SIM115
        self._registered.clear()
        self.started_at = time.time()
        self.process = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                        env=self.env, cwd=REPO)
        log.close()
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        return self.started_at

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "edge" in message:
                with self._lock:
                    self._edges[message["edge"]] = [message["press"], message["release"]]
            elif message.get("event") == "registered":
                self._registered.set()

    def connect(self, timeout: float = 15.0) -> None:
        pass

    def registered(self) -> bool:
        return self._registered.is_set()

    def _send(self, line: str) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(line.encode())
        self.process.stdin.flush()

    def press_control(self) -> float:
        sent = time.time()
        self._send("press\n")
        return sent

    def press_pin(self, tag: str) -> None:
        self._send(f"pin {PIN} {HOLD_MS} {tag}\n")

    def trim(self) -> None:
        self._send("trim\n")

    def edges(self, tag: str, timeout: float = 2.0) -> list[float]:
        def fetch() -> list[float] | None:
            with self._lock:
                return self._edges.pop(tag, None)

        return wait(fetch, timeout, f"{self.name}'s pin edges")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self._send("quit\n")
                self.process.wait(timeout)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


# --- the caller ------------------------------------------------------------------------------------------


class Caller:
    """baresip dialling a phone, one call at a time; its event list is emptied after each call."""

    def __init__(self, baresip: Baresip, kamailio: Kamailio) -> None:
        self.ua = baresip
        self.kamailio = kamailio

    def _forget_events(self) -> None:
        with self.ua._changed:  # the bench's own peer: keep the event list short over thousands of calls
            self.ua._events.clear()
            self.ua._consumed.clear()

    def ring(self, phone: Phone, timeout: float = 5.0) -> str:
        self._forget_events()
        self.ua.dial(self.kamailio.uri(phone.user))
        return str(self.ua.wait_event("CALL_RINGING", timeout)["id"])

    def established(self, call_id: str, timeout: float = 5.0) -> None:
        self.ua.wait_event("CALL_ESTABLISHED", timeout, where=lambda e: e.get("id") == call_id)

    def hang_up(self, call_id: str, timeout: float = 5.0) -> None:
        self.ua.hangup()
        self.closed(call_id, timeout)

    def closed(self, call_id: str, timeout: float = 5.0) -> None:
        self.ua.wait_event("CALL_CLOSED", timeout, where=lambda e: e.get("id") == call_id)


@dataclass
class Press:
    phone: str
    path: str  # "pin", "control", "hfp", "usb" or "usb-alsa"
    call_id: str
    edge: float  # time.time() of the deciding pin edge, of sending the control command, of the headset's ATA, or
    # of the USB headset's hook-switch report
    wire: float | None = None  # when the 200 OK reached the proxy

    @property
    def latency_ms(self) -> float | None:
        return None if self.wire is None else (self.wire - self.edge) * 1000.0


@dataclass
class Cycle:
    caller: Caller
    settle: tuple[float, float] = (0.05, 0.10)  # after the ringing starts, as a person takes a moment
    presses: list[Press] = field(default_factory=list)
    _tags: int = 0

    def call(self, phone: Phone, path: str, headset: Any = None) -> Press:
        """Ring the phone, answer it through `path`, hang up from the caller (``usb``: from the headset).

        ``hfp``: ``headset`` (tests/hfp/bluealsa_rig.py's Headset, its SLC done with this phone through
        bluealsa) must also have got ``RING`` before the pause; it then sends ``ATA``, timed just before the
        write. Its ``OK`` and indicators are checked, and ``+CIEV: 2,0`` awaited after the hang-up, so the
        next call finds it idle.

        ``usb`` and ``usb-alsa``: ``headset`` (tests/usb_headset/sim.py's UsbHeadsetSim, the Jabra-like
        descriptor, held open by this phone) must also have got the phone's Ring output report before the
        pause; it then sends the hook switch's Off-Hook (``HOOK_DOWN``), timed just before the write. The
        phone's Off-Hook report is awaited once the caller has the call; ``HOOK_UP`` then hangs up (the
        caller's call closes: the phone's BYE) and the phone's Idle report is awaited, so the next call
        finds the headset idle. The hook goes back once the phone's call is ``active`` (its ACK taken).
        """
        usb = path in ("usb", "usb-alsa")
        if usb:
            from tests.usb_headset.test_usb_sip import HOOK_DOWN, HOOK_UP, IDLE, OFF_HOOK, RING
        if path == "hfp":
            headset.take()  # what the last call left (a late RING)
        call_id = self.caller.ring(phone)
        if path == "hfp":
            headset.expect("RING", 5.0)
        elif usb:
            headset.wait_report(RING)
        time.sleep(random.uniform(*self.settle))
        if path == "pin":
            self._tags += 1
            tag = str(self._tags)
            phone.press_pin(tag)
            self.caller.established(call_id)
            edges = phone.edges(tag)
            edge = edges[0] if phone.deciding_edge == "press" else edges[1]
        elif path == "hfp":
            edge = time.time()
            headset.send("ATA")
            self.caller.established(call_id)
            lines = headset.expect("+CIEV: 3,0", 5.0)
            if "OK" not in lines or "ERROR" in lines:
                raise BenchError(f"{phone.name}: the headset's ATA got {lines}")
        elif usb:
            edge = time.time()
            headset.send(HOOK_DOWN)
            self.caller.established(call_id)
            headset.wait_report(OFF_HOOK)
            # The phone's call confirmed (the caller's ACK taken) before the boom goes back: PJSUA hanging up
            # between its 200 and the ACK sends two BYEs (bench/README.md, row 1c).
            wait(lambda: any(c["sip_call_id"] == call_id and c["state"] == "active"
                             for c in phone.request({"cmd": "status"})["calls"]), 5.0,
                 f"{phone.name}'s call to be confirmed", interval=0.005)
        else:
            edge = phone.press_control()
            self.caller.established(call_id)
        if usb:
            headset.send(HOOK_UP)  # the phone hangs up (its BYE closes the caller's call)
            self.caller.closed(call_id)
            headset.wait_report(IDLE)
        else:
            self.caller.hang_up(call_id)
        if path == "hfp":
            headset.expect("+CIEV: 2,0", 5.0)
        press = Press(phone.name, path, call_id, edge)
        self.presses.append(press)
        return press


_JITTER = r"""
import json, signal, sys, time
period, late, stop = float(sys.argv[1]), [], []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
while not stop:
    t = time.monotonic()
    time.sleep(period)
    late.append((time.monotonic() - t - period) * 1000.0)
print(json.dumps(late))
"""


class Jitter:
    """A thread that sleeps 5 ms at a time and notes how late it wakes: the machine's own scheduling delay.

    Run beside the presses, it tells how much of a phone's tail latency any sleeping thread would have
    suffered on this machine at that moment (other engineers' builds and tests share its two cores).
    """

    def __init__(self, period: float = 0.005) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", _JITTER, str(period)], stdout=subprocess.PIPE)

    def stop(self) -> list[float]:
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=10)
        return json.loads(out)


def match_wire(presses: list[Press], wire: Wire, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        wire.poll()
        for p in presses:
            if p.wire is None:
                p.wire = wire.answers.get(p.call_id)
        if all(p.wire is not None for p in presses) or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def machine() -> dict[str, Any]:
    """What ran the bench: date, CPUs, their model and the load when it started (every bench's JSON has it)."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "nproc": os.cpu_count(), "cpu": cpu,
            "loadavg_start": os.getloadavg()}
