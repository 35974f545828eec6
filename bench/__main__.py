"""``python -m bench``: the app against a raw PJSUA2 baseline script, in one run, on loopback.

Starts its own Kamailio (registrar/proxy; its log gives each SIP message's receive time), a baresip caller,
a fake BlueZ with a BLE button, bluealsa with a headset (tests/hfp/bluealsa_rig.py), a USB headset's hidraw
node played over a socket (tests/usb_headset/sim.py), a PulseAudio daemon for a clocked ALSA device
(tests/audio/conftest.py), and then, for the app (``firmware-app run``) and for ``bench/baseline.py``:

1. pin edge and control-socket press -> the 200 OK on the wire (at the proxy): p50, p99, max; and for the
   app alone, a Bluetooth headset's ATA (HFP, through the real bluealsa on a private bus) -> the 200 OK,
   and a USB headset's hook-switch report (hidraw) -> the 200 OK, with the call's audio on the null
   device and on an ALSA device (PulseAudio-backed);
2. idle CPU of the registered phone (CPU time, all threads) and wake-ups per second;
3. RSS with the GPIO, BLE, headset-key and transfer plugins loaded (and steady after calls);
4. process start -> the registrar's 200 to REGISTER;
5. a soak of calls answered and hung up: RSS, open fds and threads at the start and the end.

See bench/README.md. ``--quick`` is a smoke run of about two minutes. Two stress benches run on their own:
``python -m bench flood`` (bench/flood.py) and ``python -m bench soak`` (bench/race_soak.py); so does
``python -m bench pool`` (bench/pool_transfer.py): a blind transfer to a pool whose first agent is busy,
the ``available`` strategy against ``ordered``; and ``python -m bench fleet`` (bench/fleet.py): the time for
``firmware-app fleet list`` to list 20 phones on the fleet's MQTT broker.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import procstat
from bench.harness import (
    REPO,
    AppPhone,
    BaselinePhone,
    BenchError,
    Caller,
    Cycle,
    Jitter,
    Phone,
    Press,
    Wire,
    device_alsa_conf,
    match_wire,
    wait,
)
from bench.harness import machine as harness_machine
from tests.peers.baresip import Baresip
from tests.peers.kamailio import Kamailio

USERS = {str(n): f"pw{n}" for n in range(1000, 1200)}
CALLER = "1001"

#: The device: a GPIO button and status LED, a transfer target. Plus the bench's pin driver.
DEVICE = """\
[gpio.buttons.main]
pin = 17
[gpio.leds.status]
pin = 27

[transfer]
default = "desk"
[transfer.targets.desk]
uri = "1003"
label = "Front desk"
"""
BENCH_PLUGIN = '[plugins]\nmodules = ["tests.plugins.bench_pin"]\n'
#: The headset phone: the app phone's configuration plus Bluetooth headsets (the plugin's defaults).
HFP = "\n[hfp]\n"
HEADSET = "00:11:22:33:44:55"
NO_HEADSET = "the baseline has no Bluetooth headset (bench/baseline.py is PJSUA2 alone)"
#: The USB headset phones: the app phone's configuration plus [usb_headset] (the plugin's defaults, so
#: hook_echo_ms = 500) and the test plugin that puts the hidraw node behind a socket; ``usb-alsa`` also has
#: the audio tests' ``Headset`` (a PulseAudio null sink and sine source through ALSA's pulse plugin).
USB_PLUGINS = '[plugins]\nmodules = ["tests.plugins.bench_pin", "tests.plugins.hidraw_socket"]\n'
USB = "\n[usb_headset]\n"
NO_USB = ("the baseline has no USB headset (bench/baseline.py is PJSUA2 alone; reading the hook switch from "
          "hidraw is the plugin's)")
USB_PATHS = ("usb", "usb-alsa")


def full_plugins(ble_address: str) -> str:
    """GPIO, BLE (a GATT button it connects to), headset keys (a headset that is not there) and transfer."""
    return DEVICE + f"""
[ble]
adapter = "hci0"
[ble.devices.remote]
address = "{ble_address}"
characteristic = "ff01"
[ble.devices.remote.buttons.main]
press = ["01"]
release = ["00"]

[headset_keys.devices.headset]
name = "Jabra Evolve2 65"
"""


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


# --- statistics -------------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p99 of 250 samples is the 248th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def latency_summary(presses: list[Press]) -> dict[str, Any]:
    values = [p.latency_ms for p in presses if p.latency_ms is not None]
    missing = sum(1 for p in presses if p.latency_ms is None)
    if not values:
        return {"n": 0, "missing": missing}
    return {
        "n": len(values),
        "missing": missing,
        "p50": statistics.median(values),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
        "min": min(values),
    }


# --- machine ------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    pj = subprocess.run(
        [sys.executable, "-c", "import pjsua2; print(pjsua2.Endpoint().libVersion().full)"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()
    return {**harness_machine(), "pjsua2": pj, "python": platform.python_version(), "kernel": platform.release()}


# --- the phases ----------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.users = iter(u for u in USERS if u != CALLER)
        self.results: dict[str, Any] = {"machine": machine(), "settings": vars(args).copy()}
        self.pbx = Kamailio(work / "kamailio", USERS)
        self.wire: Wire
        self.caller: Caller
        self.ua: Baresip
        self.ble: Any = None
        self.bluealsa: Any = None
        self.pulse: Any = None
        self.pulse_skipped = ""
        self.running: list[Phone] = []
        self.env: dict[str, str] = {}
        if not args.host_alsa:
            self.env["ALSA_CONFIG_PATH"] = str(device_alsa_conf(work))

    # -- lifecycle --

    def __enter__(self) -> Bench:
        self.pbx.start()
        self.wire = Wire(self.pbx)
        self.ua = Baresip(self.work / "caller", CALLER, USERS[CALLER], self.pbx).start()
        self.wire.caller_sources.add(self.ua.source)
        self.caller = Caller(self.ua, self.pbx)
        return self

    def __exit__(self, *exc: Any) -> None:
        for phone in self.running:
            phone.stop()
        self.ua.stop()
        if self.ble is not None:
            self.ble.stop()
        self.stop_bluealsa()
        self.stop_pulse()
        self.pbx.stop()

    def app(self, name: str, body: str, env: dict[str, str] | None = None) -> AppPhone:
        user = next(self.users)
        phone = AppPhone(self.work / name, self.pbx, user, USERS[user], body, {**self.env, **(env or {})}, name=name)
        self.running.append(phone)
        return phone

    def baseline(self, name: str, env: dict[str, str] | None = None) -> BaselinePhone:
        user = next(self.users)
        phone = BaselinePhone(self.work / name, self.pbx, user, USERS[user], {**self.env, **(env or {})}, name=name)
        self.running.append(phone)
        return phone

    def stop(self, *phones: Phone) -> None:
        for phone in phones:
            phone.stop()
            if phone in self.running:
                self.running.remove(phone)

    def start_registered(self, *phones: Phone, timeout: float = 15.0) -> dict[str, float]:
        """Start each phone; returns seconds from process start to the registrar's 200 OK, by name."""
        took: dict[str, float] = {}
        for phone in phones:
            started = phone.start()
            t = wait(lambda p=phone, s=started: self.wire.register_ok_after(p.user, s), timeout,
                     f"{phone.name} to register")
            took[phone.name] = t - started
            phone.connect()
            wait(phone.registered, timeout, f"{phone.name} to see its registration")
        return took

    def start_ble(self) -> str:
        from bench.ble_world import BUTTON, BleWorld

        say("fake BlueZ and a BLE button for the BLE plugin")
        self.ble = BleWorld(self.work / "bluez").start()
        return BUTTON

    def start_headset(self, phone: AppPhone) -> Any:
        """One HFP headset connects through bluealsa to ``phone`` as tests/hfp/test_plugin.py's ``connected()``
        does: the phone takes its channel, bluealsa forwards (a bare AT answered OK), the SLC, service 1."""
        assert self.bluealsa is not None
        headset = self.bluealsa.connect(HEADSET, "HFP")

        def held() -> dict[str, Any] | None:
            headsets = phone.request({"cmd": "status"}).get("hfp", {}).get("headsets", [])
            return next((h for h in headsets if h["address"] == HEADSET), None)

        wait(held, 15, f"{phone.name} to hold the headset's channel", interval=0.05)
        try:
            headset.wait_forwarded()  # right after the phone's Open() bluealsa may still answer ERROR itself
        except AssertionError as e:
            raise BenchError(str(e)) from None
        headset.slc()
        headset.expect("+CIEV: 1,1")
        wait(lambda: (held() or {}).get("ready"), 5, "the headset to be ready", interval=0.05)
        return headset

    def stop_bluealsa(self) -> None:
        if self.bluealsa is not None:
            rig, self.bluealsa = self.bluealsa, None
            rig.stop()
            (self.work / "bluealsa.log").write_text(rig.log())

    def start_pulse(self) -> dict[str, str] | None:
        """tests/audio/conftest.py's PulseAudio (its .asoundrc in its own HOME defines ``Headset``); the env a
        phone needs to see it, or None (then ``self.pulse_skipped`` says why)."""
        import pytest

        from tests.audio.conftest import PulseAudio

        if shutil.which("pulseaudio") is None:
            self.pulse_skipped = "pulseaudio is not installed (tests/setup.sh installs it)"
            return None
        pulse = PulseAudio(self.work / "pulse")
        try:
            pulse.start()
        except pytest.fail.Exception as e:  # it reports a failed start the way the tests want it
            self.pulse_skipped = str(e).splitlines()[0]
            return None
        self.pulse = pulse
        return {k: pulse.env[k] for k in ("HOME", "XDG_RUNTIME_DIR", "PULSE_SERVER")}

    def stop_pulse(self) -> None:
        if self.pulse is not None:
            pulse, self.pulse = self.pulse, None
            pulse.stop()

    def start_usb(self, path: str) -> tuple[AppPhone | None, Any, dict[str, Any]]:
        """An app phone of its own for ``path`` (``usb``: the null device; ``usb-alsa``: ``Headset``), its
        USB headset plugged in before it starts (Jabra-like, echoing its hook like a latching headset),
        held open and shown Idle. Returns the phone (None when skipped), the headset, and the JSON entry."""
        from softphone_usb_headset import UsbHeadsetConfig

        from tests.audio.conftest import AUDIO
        from tests.usb_headset.descriptors import JABRA_LIKE
        from tests.usb_headset.sim import UsbHeadsetSim
        from tests.usb_headset.test_usb_sip import IDLE, jabra_echo

        name = f"app-{path}"
        body = DEVICE + USB_PLUGINS + USB
        env: dict[str, str] = {}
        if path == "usb-alsa":
            pulse_env = self.start_pulse()
            if pulse_env is None:
                say(f"{path} path skipped: {self.pulse_skipped}")
                return None, None, {"skipped": self.pulse_skipped}
            env.update(pulse_env)
            body += "\n" + AUDIO + f'\n[mixer]\nstate_file = "{self.work / name / "audio.json"}"\n'
        headset = UsbHeadsetSim(self.work / name / "hidraw", JABRA_LIKE, echo=jabra_echo).plug()
        env.update(headset.env)
        phone = self.app(name, body, env)
        self.start_registered(phone)
        headset.wait_open()
        headset.wait_report(IDLE)
        status = phone.request({"cmd": "status"})
        sound = status["engine"]["sound"]
        if (path == "usb-alsa") != sound.startswith("alsa"):
            raise BenchError(f"{name}'s calls use the sound device {sound!r}: see {phone.workdir / 'phone.log'}")
        entry = {"phone": name, "headset": "tests/usb_headset/descriptors.py JABRA_LIKE, latching hook, echoes",
                 "hook_echo_ms": UsbHeadsetConfig().hook_echo_ms, "sound": sound,
                 "ring_device": status.get("audio", {}).get("ring_device"), "baseline": NO_USB}
        if path == "usb-alsa":
            entry["alsa"] = "this machine's" if self.args.host_alsa else "as on the image (no plugins) + .asoundrc"
        return phone, headset, entry

    # -- 4 + 3: start to registered, RSS with every plugin --

    def startup_and_rss(self) -> None:
        button = self.start_ble()
        env = {"DBUS_SYSTEM_BUS_ADDRESS": self.ble.bus_address}
        body = full_plugins(button)
        starts: dict[str, list[float]] = {"app": [], "baseline": []}
        say(f"start -> REGISTER 200, {self.args.starts} starts each (app with every plugin configured)")
        for i in range(self.args.starts):
            last = i == self.args.starts - 1
            app = self.app(f"app-start{i}", body, env)
            base = self.baseline(f"baseline-start{i}")
            for phone in (app, base) if i % 2 == 0 else (base, app):
                starts[phone.kind] += self.start_registered(phone).values()
            if not last:
                self.stop(app, base)
        self.results["startup"] = {
            kind: {"runs": values, "median": statistics.median(values), "min": min(values), "max": max(values)}
            for kind, values in starts.items()
        }
        # The last two stay up for the RSS: wait for the BLE button's connection, then settle.
        say("RSS: waiting for the app's BLE connection, then 20 calls")
        log = app.workdir / "phone.log"
        try:
            wait(lambda: re.search(r"ble remote: connected", log.read_text(errors="replace")), 30,
                 "the BLE button's connection", interval=0.2)
            ble_state = "connected"
        except BenchError:
            ble_state = "not connected (see the phone log)"
        time.sleep(self.args.settle)
        rss: dict[str, Any] = {}
        for phone in (app, base):
            rss[phone.kind] = {"idle": procstat.status_kb(phone.pid, "VmRSS", "RssAnon", "RssFile", "VmHWM")}
        cycle = Cycle(self.caller, settle=(0.01, 0.02))
        for _ in range(20):
            for phone in (app, base):
                cycle.call(phone, "control")
        time.sleep(1.5)
        for phone in (app, base):
            rss[phone.kind]["after_calls"] = procstat.status_kb(phone.pid, "VmRSS", "RssAnon", "RssFile", "VmHWM")
            rss[phone.kind]["by_mapping"] = procstat.rss_by_mapping(phone.pid)
            rss[phone.kind]["threads"] = procstat.threads(phone.pid)
        rss["app"]["ble"] = ble_state
        rss["app"]["plugins"] = app.request({"cmd": "status"})["plugins"]
        self.results["rss"] = rss
        self.stop(app, base)
        self.ble.stop()
        self.ble = None

    # -- 2 + 1: idle, then the presses --

    def idle_and_latency(self, classic: bool = True, hfp: bool = True, usb: tuple[str, ...] = USB_PATHS) -> None:
        """``classic``: idle, then pin and control presses on the app and the baseline; ``hfp``: the headset's
        ATA on an app phone of its own; ``usb``: the USB headset paths to run (``usb``, ``usb-alsa``), each on
        an app phone of its own. The headset calls are interleaved with the presses (or alone when
        ``classic`` is off)."""
        app = base = None
        if classic:
            app = self.app("app", DEVICE + BENCH_PLUGIN)
            base = self.baseline("baseline")
            self.start_registered(app, base)
            time.sleep(self.args.settle)
            self.idle(app, base)
        latency: dict[str, Any] = {}
        hphone = headset = None
        if hfp:
            from tests.hfp.bluealsa_rig import NOT_INSTALLED, Bluealsa, bluealsa_installed

            if not bluealsa_installed():
                say(f"headset path skipped: {NOT_INSTALLED}")
                latency["hfp"] = {"skipped": NOT_INSTALLED}
            else:
                say("headset path: bluealsa on a private bus, an app phone with [hfp], one HFP headset")
                self.bluealsa = Bluealsa().start()
                hphone = self.app("app-hfp", DEVICE + BENCH_PLUGIN + HFP,
                                  {"DBUS_SYSTEM_BUS_ADDRESS": self.bluealsa.bus_address})
                self.start_registered(hphone)
                headset = self.start_headset(hphone)
                time.sleep(self.args.settle)
                latency["hfp"] = {"phone": hphone.name, "address": HEADSET, "transport": "HFP",
                                  "baseline": NO_HEADSET}
        usb_phones: list[tuple[str, AppPhone, Any]] = []  # (path, phone, its USB headset)
        for path in usb:
            uphone, uheadset, latency[path] = self.start_usb(path)
            if uphone is not None:
                usb_phones.append((path, uphone, uheadset))
        if usb_phones:
            say("USB headset path: " + ", ".join(f"{p.name} ({latency[path]['sound']})" for path, p, _ in usb_phones))
            time.sleep(self.args.settle)
        headsets = (["hfp"] if headset is not None else []) + [path for path, _, _ in usb_phones]
        paths = (["pin", "control"] if classic else []) + headsets
        if not paths:
            self.results["latency"] = latency
            return
        say(f"latency: {self.args.presses} presses per path per phone ({', '.join(paths)}), "
            + ("interleaved app/baseline" if classic else "the headsets alone")
            + (f", each round then one call per headset path ({', '.join(headsets)})" if classic and headsets else ""))
        cycle = Cycle(self.caller)
        latency["loadavg"] = [os.getloadavg()]
        jitter = Jitter()
        for i in range(self.args.presses):
            if app is not None and base is not None:
                for path in ("pin", "control"):
                    for phone in (app, base) if i % 2 == 0 else (base, app):
                        cycle.call(phone, path)
            if hphone is not None:
                cycle.call(hphone, "hfp", headset)
            for path, uphone, uheadset in usb_phones:
                cycle.call(uphone, path, uheadset)
            if (i + 1) % 50 == 0:
                say(f"  {i + 1}/{self.args.presses}")
        late = jitter.stop()
        match_wire(cycle.presses, self.wire)
        latency["loadavg"].append(os.getloadavg())
        latency["machine"] = {"n": len(late), "p50": statistics.median(late), "p99": percentile(late, 99),
                              "max": max(late)}
        for kind, phone in (("app", app), ("baseline", base)):
            if phone is not None:
                latency[kind] = {
                    path: latency_summary([p for p in cycle.presses if p.phone == phone.name and p.path == path])
                    for path in ("pin", "control")
                }
        if hphone is not None:
            latency.setdefault("app", {})["hfp"] = latency_summary(
                [p for p in cycle.presses if p.phone == hphone.name and p.path == "hfp"])
        for path, uphone, _ in usb_phones:
            latency.setdefault("app", {})[path] = latency_summary(
                [p for p in cycle.presses if p.phone == uphone.name and p.path == path])
        latency["samples"] = [vars(p) | {"latency_ms": p.latency_ms} for p in cycle.presses]
        self.results["latency"] = latency
        self.stop(*(p for p in (app, base, hphone) if p is not None), *(p for _, p, _ in usb_phones))
        for _, _, uheadset in usb_phones:
            uheadset.unplug()
        self.stop_bluealsa()
        self.stop_pulse()

    def idle(self, app: AppPhone, base: BaselinePhone) -> None:
        say(f"idle: {self.args.idle:.0f} s, both phones registered and untouched")
        before = {p.kind: procstat.sample(p.pid) for p in (app, base)}
        tasks = {p.kind: procstat.per_thread(p.pid) for p in (app, base)}
        load0 = os.getloadavg()
        time.sleep(self.args.idle)
        after = {p.kind: procstat.sample(p.pid) for p in (app, base)}
        tasks_after = {p.kind: procstat.per_thread(p.pid) for p in (app, base)}
        self.results["idle"] = {
            kind: vars(procstat.idle_between(before[kind], after[kind])) for kind in before
        }
        for phone in (app, base):  # where the wake-ups come from (thread names from py-spy, after the sample)
            seconds = after[phone.kind].wall - before[phone.kind].wall
            self.results["idle"][phone.kind]["by_thread"] = procstat.threads_between(
                tasks[phone.kind], tasks_after[phone.kind], seconds, procstat.thread_names(phone.pid))
        self.results["idle"]["loadavg"] = [load0, os.getloadavg()]

    # -- 5: soak --

    def soak(self) -> None:
        app = self.app("app-soak", DEVICE + BENCH_PLUGIN)
        base = self.baseline("baseline-soak")
        self.start_registered(app, base)
        time.sleep(self.args.settle)
        n, warmup, quiet = self.args.soak, max(10, self.args.soak // 5), self.args.quiesce
        say(f"soak: {n} calls each (answered by control press and by pin in turn, hung up by the caller); "
            f"RSS, fds and threads at the start, after {warmup} calls and at the end, each after {quiet:.0f} s quiet")
        marks: dict[str, list[dict[str, Any]]] = {"app": [], "baseline": []}

        def mark(calls: int, label: str, pause: float) -> None:
            time.sleep(pause)
            for phone in (app, base):
                fp = procstat.footprint(phone.pid)
                marks[phone.kind].append(
                    {"calls": calls, "mark": label, "rss_kb": fp.rss_kb, "fds": fp.fds, "threads": fp.threads})

        mark(0, "start", 0)
        cycle = Cycle(self.caller, settle=(0.005, 0.015))
        started = time.monotonic()
        for i in range(n):
            for phone in (app, base) if i % 2 == 0 else (base, app):
                cycle.call(phone, "pin" if i % 2 else "control")
            if i + 1 == warmup:
                mark(i + 1, "warm", quiet)
            elif i + 1 == n:
                mark(i + 1, "end", quiet)
            elif (i + 1) % max(1, n // 10) == 0:
                mark(i + 1, "", 0)
            if (i + 1) % max(1, n // 10) == 0:
                say(f"  {i + 1}/{n}: app {marks['app'][-1]['rss_kb'] / 1024:.1f} MB, "
                    f"baseline {marks['baseline'][-1]['rss_kb'] / 1024:.1f} MB")
            cycle.presses.clear()
        seconds = time.monotonic() - started
        for phone in (app, base):
            phone.trim()
        mark(n, "end, after malloc_trim", 1.0)
        self.results["soak"] = {"calls": n, "warmup": warmup, "quiesce_s": quiet, "seconds": seconds, **marks}
        self.stop(app, base)


# --- the table ---------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ratio(app: float | None, base: float | None) -> str:
    if app is None or base is None or base == 0:
        return "—"
    return f"{app / base:.2f}"


def table(results: dict[str, Any]) -> tuple[str, list[tuple[str, bool]]]:
    rows: list[tuple[str, str, str, str, str, str]] = []
    verdicts: list[tuple[str, bool]] = []

    def row(what: str, app: float | None, base: float | None, target: str = "", met: bool | None = None,
            digits: int = 2, ratio: str | None = None) -> None:
        mark = "" if met is None else ("met" if met else "**missed**")
        rows.append((what, _fmt(app, digits), _fmt(base, digits), ratio or _ratio(app, base), target, mark))
        if met is not None:
            verdicts.append((what, met))

    lat = results.get("latency")
    if lat:
        for path, label in (("pin", "pin edge"), ("control", "`press` on the control socket")):
            if path not in lat.get("app", {}) or path not in lat.get("baseline", {}):
                continue
            a, b = lat["app"][path], lat["baseline"][path]
            for stat in ("p50", "p99", "max"):
                target, met = "", None
                if path == "pin" and stat == "p50":
                    target, met = "≤ 2 ms", a["p50"] <= 2.0
                elif path == "pin" and stat == "p99":
                    target, met = "≤ 5 ms", a["p99"] <= 5.0
                row(f"{label} → 200 OK at the proxy, {stat} (ms; n={a['n']}/{b['n']})", a.get(stat), b.get(stat),
                    target, met)
        hfp = lat.get("hfp", {})
        label = "headset `ATA` (HFP, through bluealsa) → 200 OK at the proxy"
        if "skipped" in hfp:
            rows.append((f"{label}: not measured", hfp["skipped"], "", "", "", ""))
        elif "hfp" in lat.get("app", {}):
            a = lat["app"]["hfp"]
            for stat in ("p50", "p99", "max"):
                rows.append((f"{label}, {stat} (ms; n={a['n']}; app only)", _fmt(a.get(stat)), "no headset¹", "—",
                             "", ""))
        for path, label in (("usb", "USB headset hook switch (hidraw), audio on the null device"),
                            ("usb-alsa", "USB headset hook switch (hidraw), audio on an ALSA device (PulseAudio)")):
            label += " → 200 OK at the proxy"
            entry = lat.get(path, {})
            if "skipped" in entry:
                rows.append((f"{label}: not measured", entry["skipped"], "", "", "", ""))
            elif path in lat.get("app", {}):
                a = lat["app"][path]
                for stat in ("p50", "p99", "max"):
                    rows.append((f"{label}, {stat} (ms; n={a['n']}; app only)", _fmt(a.get(stat)), "no headset²",
                                 "—", "", ""))
        m = lat.get("machine")
        if m:
            rows.append((f"machine: how late a sleeping thread woke meanwhile, p50 / p99 / max (ms; n={m['n']})",
                         f"{m['p50']:.2f} / {m['p99']:.2f} / {m['max']:.2f}", "", "", "", ""))
    idle = results.get("idle")
    if idle:
        a, b = idle["app"], idle["baseline"]
        row(f"idle CPU, % of one core ({a['seconds']:.0f} s, CPU clock of all threads)", a["cpu_percent"],
            b["cpu_percent"], "≤ 0.1 %", a["cpu_percent"] <= 0.1, digits=3)
        row("idle CPU, % of one core (utime+stime, 10 ms ticks)", a["cpu_percent_ticks"], b["cpu_percent_ticks"],
            digits=3)
        row("idle wake-ups per second (context switches, all threads)", a["wakeups_per_s"], b["wakeups_per_s"],
            digits=1)
    rss = results.get("rss")
    if rss:
        a = max(rss["app"]["idle"]["VmRSS"], rss["app"]["after_calls"]["VmRSS"]) / 1024
        b = max(rss["baseline"]["idle"]["VmRSS"], rss["baseline"]["after_calls"]["VmRSS"]) / 1024
        row("RSS (MB), every plugin loaded; larger of idle and after 20 calls", a, b, "≤ 40 MB", a <= 40, digits=1)
        row("  of which file-backed (MB; shared libraries, .pyc)", rss["app"]["after_calls"]["RssFile"] / 1024,
            rss["baseline"]["after_calls"]["RssFile"] / 1024, digits=1)
    st = results.get("startup")
    if st:
        a, b = st["app"]["median"], st["baseline"]["median"]
        row(f"process start → REGISTER 200 at the registrar (s, median of {len(st['app']['runs'])})", a, b,
            "≤ 3× baseline", a <= 3 * b, digits=3)
    soak = results.get("soak")
    if soak:
        def at(kind: str, label: str) -> dict[str, Any]:
            return next(m for m in soak[kind] if m["mark"] == label)

        a0, aw, a1, at1 = (at("app", m) for m in ("start", "warm", "end", "end, after malloc_trim"))
        b0, bw, b1, bt1 = (at("baseline", m) for m in ("start", "warm", "end", "end, after malloc_trim"))
        mb = 1024.0
        row("soak: RSS at the start (MB)", a0["rss_kb"] / mb, b0["rss_kb"] / mb, digits=1)
        row(f"soak: RSS after {soak['calls']} calls (MB)", a1["rss_kb"] / mb, b1["rss_kb"] / mb, digits=1)
        ga, gb = (a1["rss_kb"] - a0["rss_kb"]) / mb, (b1["rss_kb"] - b0["rss_kb"]) / mb
        row(f"soak: RSS growth, start → end of {soak['calls']} calls (MB)", ga, gb, "≤ 2 MB", ga <= 2.0)
        row(f"soak: RSS growth from call {soak['warmup']} to call {soak['calls']} (MB)",
            (a1["rss_kb"] - aw["rss_kb"]) / mb, (b1["rss_kb"] - bw["rss_kb"]) / mb)
        row("soak: RSS growth, start → end after malloc_trim(0) (MB)", (at1["rss_kb"] - a0["rss_kb"]) / mb,
            (bt1["rss_kb"] - b0["rss_kb"]) / mb)
        rows.append(("soak: open fds (start → end)", f"{a0['fds']} → {a1['fds']}", f"{b0['fds']} → {b1['fds']}",
                     "", "no growth", "met" if a1["fds"] <= a0["fds"] else "**missed**"))
        verdicts.append(("soak fds", a1["fds"] <= a0["fds"]))
        rows.append(("soak: threads (start → end)", f"{a0['threads']} → {a1['threads']}",
                     f"{b0['threads']} → {b1['threads']}", "", "no growth",
                     "met" if a1["threads"] <= a0["threads"] else "**missed**"))
        verdicts.append(("soak threads", a1["threads"] <= a0["threads"]))
    head = ("measurement", "app", "baseline", "app/baseline", "target (app)", "")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if any(r[2] == "no headset¹" for r in rows):
        lines += ["", f"¹ {NO_HEADSET}: the headset rows are the app's alone, without a ratio; the app phone "
                  "there is one of its own (the same configuration plus `[hfp]`), its calls interleaved with "
                  "the pin and control presses when those run too."]
    if any(r[2] == "no headset²" for r in rows):
        lines += ["", f"² {NO_USB}: the USB headset rows are the app's alone, without a ratio; each on an app "
                  "phone of its own (the same configuration plus `[usb_headset]` and the test plugin standing in "
                  "for the hidraw node; the ALSA one also `[audio]` = `Headset`), its calls interleaved with the "
                  "other paths' when those run too."]
    return "\n".join(lines), verdicts


def details(results: dict[str, Any]) -> str:
    """Where the idle wake-ups and the memory go: the evidence behind the table's idle and RSS rows."""
    out: list[str] = []
    idle = results.get("idle")
    if idle:
        for kind in ("app", "baseline"):
            out.append(f"idle, {kind}, by thread (wake-ups/s, % of a core):")
            for r in idle[kind]["by_thread"]:
                if r["wakeups_per_s"] or r["cpu_percent"]:
                    out.append(f"  {r['wakeups_per_s']:8.2f}/s {r['cpu_percent']:8.4f} %  {r['thread']}")
    rss = results.get("rss")
    if rss:
        for kind in ("app", "baseline"):
            out.append(f"RSS after calls, {kind}, largest mappings (kB): "
                       + ", ".join(f"{Path(name).name} {kb}" for name, kb in rss[kind]["by_mapping"][:8]))
    return "\n".join(out)


def header(results: dict[str, Any]) -> str:
    m = results["machine"]
    return (f"{m['date']}; {m['nproc']} CPUs ({m['cpu']}), kernel {m['kernel']}, Python {m['python']}, "
            f"PJSUA2 {m['pjsua2']}; load average at start {m['loadavg_start'][0]:.2f}, at end "
            f"{m['loadavg_end'][0]:.2f}; ALSA: {'this machine' if results['settings'].get('host_alsa') else 'as on the image (no plugins)'}"
            f"{' (--quick)' if results['settings'].get('quick') else ''}")


# --- main ------------------------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                epilog="python -m bench flood | soak --help: the stress benches; python -m bench pool "
                                       "--help: a transfer to a pool whose first agent is busy; python -m bench "
                                       "fleet --help: fleet list with 20 phones (bench/README.md)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 30 presses (and headset calls), 10 s idle, 100 soak calls, 2 starts")
    p.add_argument("--presses", type=int,
                   help="presses per path per phone, and calls per headset path (default 250; --quick 30)")
    p.add_argument("--idle", type=float, help="idle seconds (default 60)")
    p.add_argument("--soak", type=int, help="soak calls per phone (default 1000)")
    p.add_argument("--starts", type=int, help="starts per phone for start -> registered (default 7)")
    p.add_argument("--only", default="startup,idle,latency,hfp,usb,usb-alsa,soak",
                   help="comma-separated phases: startup (also RSS), idle (also latency), latency (also idle), "
                        "hfp (the Bluetooth headset's ATA), usb and usb-alsa (the USB headset's hook switch, the "
                        "call's audio on the null device / on a PulseAudio-backed ALSA device); the headset paths "
                        "are interleaved with the latency presses, or run alone; soak")
    p.add_argument("--host-alsa", action="store_true",
                   help="give the phones this machine's ALSA configuration (default: the image's, no plugins)")
    p.add_argument("--json", type=Path, help="write every figure and sample here")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs of every process)")
    args = p.parse_args(argv)
    quick = args.quick
    args.presses = args.presses or (30 if quick else 250)
    args.idle = args.idle or (10.0 if quick else 60.0)
    args.soak = args.soak or (100 if quick else 1000)
    args.starts = args.starts or (2 if quick else 7)
    args.settle = 2.0 if quick else 5.0
    args.quiesce = 5.0 if quick else 35.0  # PJSIP keeps a dialog 32 s after a BYE it answered (UDP timer J)
    args.json = str(args.json) if args.json else None
    return args


#: Benches that run on their own, by their first argument; each module's main() takes the rest.
STRESS_BENCHES = {"flood": "bench.flood", "soak": "bench.race_soak", "pool": "bench.pool_transfer",
                  "fleet": "bench.fleet"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in STRESS_BENCHES:
        import importlib

        return int(importlib.import_module(STRESS_BENCHES[argv[0]]).main(argv[1:]))
    args = parse(argv)
    phases = set(args.only.split(","))
    os.chdir(REPO)
    work = Path(tempfile.mkdtemp(prefix="firmware-app-bench-"))
    say(f"work folder {work}")
    try:
        with Bench(args, work) as bench:
            if "startup" in phases:
                bench.startup_and_rss()
            classic = "idle" in phases or "latency" in phases
            usb = tuple(path for path in USB_PATHS if path in phases)
            if classic or "hfp" in phases or usb:
                bench.idle_and_latency(classic=classic, hfp="hfp" in phases, usb=usb)
            if "soak" in phases:
                bench.soak()
            results = bench.results
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["machine"]["loadavg_end"] = os.getloadavg()
    text, verdicts = table(results)
    print()
    print(header(results))
    print()
    print(text)
    print()
    print(details(results))
    print()
    missed = [what for what, met in verdicts if not met]
    print("targets: " + ("all met" if not missed else f"{len(missed)} missed: " + "; ".join(missed)))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
        say(f"figures and samples in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
