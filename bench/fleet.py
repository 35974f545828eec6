"""``python -m bench fleet``: the time for ``firmware-app fleet list`` to list N phones (issue 16).

Starts, on 127.0.0.1, a Kamailio (users phone-01..phone-N), a Mosquitto of the fleet tests
(tests/fleet/mosquitto.py: TLS only, a password per phone, the per-device ACL, the operator) and N phones
(``firmware-app run``, bench/harness.py's AppPhone) with the telemetry plugin, device = user = phone-NN. Once
an operator's ``mosquitto_sub`` has seen every phone's retained ``online`` and a ``state`` saying
``registered`` (the fleet is up), each run:

- **the command**: ``firmware-app fleet list --json`` as an operator would run it, ``time.monotonic()`` from
  before the process starts to its exit; the run counts only if it lists all N phones online, registered and
  idle;
- **inside the command** (the same code, in the bench's process: firmware_app.fleet's Session): the TLS
  connection (CONNECT → CONNACK), subscribe → every phone's online and state in hand, and subscribe → the
  gathering's end (the retained messages stop; the command then waits :data:`firmware_app.fleet.QUIET_S`
  more to be sure no more come).

The two kinds alternate; the figures are p50, min and max over ``--runs``.

Then **the idle cost of the telemetry plugin**: one more phone, ``reference``, registered on the same
Kamailio but without ``[telemetry]``, and for ``--idle`` seconds (default 60) nobody touches any phone: each
phone's CPU (its CPU clock, all threads), wake-ups per second and RSS, the connected phones' median against
the reference's. ``--tcp-nodelay`` runs the broker
with ``set_tcp_nodelay true`` (Mosquitto's default is false: Nagle's algorithm on its side of each
connection, which costs a delayed ACK, about 40 ms, at the CONNACK and again at the retained messages after
the SUBACK). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from bench import procstat
from bench.harness import REPO, AppPhone, BenchError, device_alsa_conf, machine
from firmware_app import fleet
from tests.fleet.mosquitto import Mosquitto, PeerError, Watcher
from tests.peers.kamailio import Kamailio

PREFIX = "firmware-app"
OPERATOR = ("operator", "pw-op")


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def devices(n: int) -> list[str]:
    return [f"phone-{i:02d}" for i in range(1, n + 1)]


def complete(phones: dict[str, Any], names: list[str]) -> bool:
    """Every phone online and its state registered: what a run must list."""
    def ok(v: Any) -> bool:
        if isinstance(v, fleet.PhoneView):
            return bool(v.online) and (v.state or {}).get("registration") == "registered"
        return v.get("online") is True and v.get("registration") == "registered" and v.get("state") == "idle"

    return all(name in phones and ok(phones[name]) for name in names)


class TimedSession(fleet.Session):
    """The fleet command's Session, noting when the last phone's description came in."""

    names: list[str] = []
    complete_at: float | None = None

    def _take(self, topic: str, raw: Any, retained: bool, now: float) -> None:
        super()._take(topic, raw, retained, now)
        if self.complete_at is None and complete(self.phones, self.names):
            self.complete_at = now


class NoDelayMosquitto(Mosquitto):
    """The tests' Mosquitto with ``set_tcp_nodelay true`` (small packets sent at once, not after an ACK)."""

    def _render_config(self) -> str:
        return super()._render_config() + "set_tcp_nodelay true\n"


class FleetBench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.names = devices(args.phones)
        self.pbx = Kamailio(work / "kamailio", {name: f"sip-{name}" for name in [*self.names, "reference"]})
        self.broker = (NoDelayMosquitto if args.tcp_nodelay else Mosquitto)(work / "mosquitto")
        self.env = {"PYTHONUNBUFFERED": "1"}
        if not args.host_alsa:
            self.env["ALSA_CONFIG_PATH"] = str(device_alsa_conf(work))
        self.phones: list[AppPhone] = []
        self.watcher: Watcher | None = None
        self.password_file = work / "operator.password"
        self.password_file.write_text(OPERATOR[1] + "\n")
        self.password_file.chmod(0o600)

    def __enter__(self) -> Self:
        try:
            self.pbx.start()
            for name in self.names:
                self.broker.add_user(name, f"pw-{name}")
            self.broker.add_user(*OPERATOR)
            self.broker.start()
            self.watcher = Watcher(self.broker, *OPERATOR, f"{PREFIX}/#")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.phones:
            with ThreadPoolExecutor(len(self.phones)) as pool:
                list(pool.map(lambda p: p.stop(), self.phones))
        if self.watcher is not None:
            self.watcher.stop()
        self.broker.stop()
        self.pbx.stop()

    # -- the fleet --

    def body(self, name: str) -> str:
        b = self.broker
        return (f'[telemetry]\nbroker = "{b.host}:{b.port}"\nca_file = "{b.ca_file}"\ndevice = "{name}"\n'
                f'username = "{name}"\n')

    def start_fleet(self) -> float:
        """Start every phone at once; seconds until the operator has seen each online and registered."""
        started = time.monotonic()
        for name in self.names:
            phone = AppPhone(self.work / name, self.pbx, name, f"sip-{name}", self.body(name), self.env, name=name)
            with open(phone.workdir / "secrets.toml", "a") as secrets:
                secrets.write(f'mqtt_password = "pw-{name}"\n')
            self.phones.append(phone)
            phone.start()
        watcher = self.watcher
        assert watcher is not None

        def up() -> bool:
            views: dict[str, dict[str, Any]] = {}
            for m in watcher.messages():
                device, _, sub = m["topic"].removeprefix(PREFIX + "/").partition("/")
                try:
                    body = json.loads(m["payload"])
                except ValueError:
                    continue
                view = views.setdefault(device, {})
                if sub == "online":
                    view["online"] = body.get("online")
                elif sub == "state":
                    view.update(registration=body.get("registration"), state=body.get("state"))
            return complete(views, self.names)

        deadline = time.monotonic() + self.args.start_timeout
        while not up():
            dead = [p.name for p in self.phones if not p.alive()]
            if dead:
                raise BenchError(f"phones exited: {', '.join(dead)} (see {self.work}/PHONE/phone.log)")
            if time.monotonic() > deadline:
                raise BenchError(f"not every phone online and registered after {self.args.start_timeout} s")
            time.sleep(0.05)
        return time.monotonic() - started

    # -- the runs --

    def connection(self) -> list[str]:
        b = self.broker
        return ["--broker", f"{b.host}:{b.port}", "--ca-file", str(b.ca_file), "--username", OPERATOR[0],
                "--password-file", str(self.password_file)]

    def command(self) -> float:
        argv = [sys.executable, "-m", "firmware_app.cli", "fleet", "list", "--json", *self.connection()]
        started = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO)
        took = time.monotonic() - started
        if done.returncode != 0:
            raise BenchError(f"fleet list exited {done.returncode}: {done.stderr.strip()}")
        listed = {p["device"]: p for p in json.loads(done.stdout)}
        if not complete(listed, self.names) or len(listed) != len(self.names):
            raise BenchError(f"fleet list did not list all {len(self.names)} phones online and registered: "
                             f"{done.stdout[:2000]}")
        return took

    def inside(self) -> dict[str, float]:
        return asyncio.run(self._inside())

    async def _inside(self) -> dict[str, float]:
        import aiomqtt

        args = argparse.Namespace(broker=f"{self.broker.host}:{self.broker.port}", ca_file=str(self.broker.ca_file),
                                  username=OPERATOR[0], password_file=str(self.password_file), prefix=PREFIX,
                                  fleet_timeout=self.args.timeout)
        s = fleet.settings(args)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        client = aiomqtt.Client(s.host, s.port, username=s.username, password=s.password, tls_context=fleet._tls(s),
                                timeout=10)
        async with client:
            t1 = loop.time()
            async with TimedSession(client, s) as session:
                session.names = self.names
                t2 = loop.time()
                await session.gather()
                t3 = loop.time()
                if session.complete_at is None:
                    raise BenchError("the gathering ended without every phone online and registered")
                return {"connect_ms": (t1 - t0) * 1000, "all_in_ms": (session.complete_at - t2) * 1000,
                        "gather_ms": (t3 - t2) * 1000}

    def run(self) -> dict[str, Any]:
        say(f"{len(self.names)} phones, Kamailio {self.pbx.domain}, Mosquitto {self.broker.host}:{self.broker.port}")
        ready = self.start_fleet()
        say(f"all {len(self.names)} online and registered {ready:.1f} s after their start")
        self.command()  # a warm-up: the page cache for the interpreter and the modules
        commands: list[float] = []
        insides: list[dict[str, float]] = []
        for i in range(self.args.runs):
            commands.append(self.command())
            insides.append(self.inside())
            if self.args.verbose:
                say(f"  run {i + 1}: command {commands[-1] * 1000:.0f} ms; inside: {insides[-1]}")
        return {"phones": len(self.names), "fleet_up_s": ready, "command_s": commands, "inside": insides,
                "idle": self.idle()}

    def idle(self) -> dict[str, Any]:
        """Every phone untouched for ``--idle`` s: the connected phones' CPU and RSS, and a phone without telemetry."""
        reference = AppPhone(self.work / "reference", self.pbx, "reference", "sip-reference", "", self.env,
                             name="reference")
        self.phones.append(reference)
        reference.start()
        wait_until = time.monotonic() + self.args.start_timeout
        while not self.pbx.contacts("reference"):
            if time.monotonic() > wait_until or not reference.alive():
                raise BenchError("the reference phone did not register")
            time.sleep(0.05)
        time.sleep(5)  # past the start: the first REGISTER's refresh timers, the plugins' first work
        say(f"idle: {self.args.idle:.0f} s, {len(self.phones)} phones untouched")
        before = {p.name: procstat.sample(p.pid) for p in self.phones}
        time.sleep(self.args.idle)
        after = {p.name: procstat.sample(p.pid) for p in self.phones}
        figures = {}
        for p in self.phones:
            idle = procstat.idle_between(before[p.name], after[p.name])
            figures[p.name] = {"cpu_percent": idle.cpu_percent, "wakeups_per_s": idle.wakeups_per_s,
                               "rss_kb": procstat.rss_kb(p.pid)}
        return figures


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": statistics.median(values), "min": min(values), "max": max(values)}


def report(results: dict[str, Any]) -> str:
    m, r = results["machine"], results["runs"]
    n = r["phones"]
    c = summary([v * 1000 for v in r["command_s"]])
    rows = [(f"`firmware-app fleet list --json`, process start → exit, all {n} listed", c)]
    for key, what in (("connect_ms", "inside: TLS connect → CONNACK"),
                      ("all_in_ms", f"inside: subscribe → all {n} phones' online and state in hand"),
                      ("gather_ms", f"inside: subscribe → the gathering's end (+{fleet.QUIET_S:g} s quiet)")):
        rows.append((what, summary([x[key] for x in r["inside"]])))
    lines_idle = idle_report(r["idle"], r["phones"], results["settings"]["idle"])
    nodelay = "set_tcp_nodelay true" if results["settings"]["tcp_nodelay"] else "Mosquitto's defaults"
    lines = [f"fleet list, {n} phones, broker with {nodelay}: {results['settings']['runs']} runs; {m['date']}, {m['nproc']} CPUs, load "
             f"average {m['loadavg_start'][0]:.2f} at the start, {m['loadavg_end'][0]:.2f} at the end; the fleet "
             f"up (all online and registered) {r['fleet_up_s']:.1f} s after the phones' start",
             "",
             "| (ms) | p50 | min | max |",
             "|---|---|---|---|"]
    lines += [f"| {what} (n={v['n']}) | {v['p50']:.0f} | {v['min']:.0f} | {v['max']:.0f} |" if v["p50"] >= 10 else
              f"| {what} (n={v['n']}) | {v['p50']:.1f} | {v['min']:.1f} | {v['max']:.1f} |" for what, v in rows]
    return "\n".join([*lines, "", *lines_idle])


def idle_report(idle: dict[str, dict[str, float]], n: int, seconds: float) -> list[str]:
    ref = idle["reference"]
    connected = [v for name, v in idle.items() if name != "reference"]

    def median(key: str) -> float:
        return statistics.median(v[key] for v in connected)

    cpu, wake, rss = median("cpu_percent"), median("wakeups_per_s"), median("rss_kb") / 1024
    return [
        f"idle, {seconds:g} s untouched: the {n} phones with the telemetry plugin connected (median, max) "
        "against a phone without it",
        "",
        "| idle | telemetry connected: median | max | without telemetry | ratio |",
        "|---|---|---|---|---|",
        f"| CPU, % of one core (CPU clock, all threads) | {cpu:.3f} | {max(v['cpu_percent'] for v in connected):.3f} "
        f"| {ref['cpu_percent']:.3f} | {cpu / ref['cpu_percent']:.1f}x |" if ref["cpu_percent"] > 0 else
        f"| CPU, % of one core | {cpu:.3f} | | {ref['cpu_percent']:.3f} | |",
        f"| wake-ups per second (all threads) | {wake:.1f} | {max(v['wakeups_per_s'] for v in connected):.1f} "
        f"| {ref['wakeups_per_s']:.1f} | {wake / max(ref['wakeups_per_s'], 1e-9):.1f}x |",
        f"| RSS, MiB | {rss:.1f} | {max(v['rss_kb'] for v in connected) / 1024:.1f} | {ref['rss_kb'] / 1024:.1f} "
        f"| {rss * 1024 / ref['rss_kb']:.2f}x |",
    ]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench fleet", description=__doc__.split("\n\n")[0])
    p.add_argument("--phones", type=int, default=20, help="phones in the fleet (default 20; at most 99)")
    p.add_argument("--runs", type=int, default=7, help="runs of the command (and of the in-process timing)")
    p.add_argument("--timeout", type=float, default=3.0, help="the fleet command's --timeout (default 3)")
    p.add_argument("--idle", type=float, default=60.0, help="seconds of the idle measurement (default 60)")
    p.add_argument("--start-timeout", type=float, default=120.0, help="seconds for the fleet to come up")
    p.add_argument("--tcp-nodelay", action="store_true", help="run Mosquitto with set_tcp_nodelay true")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--keep", action="store_true", help="keep the work folder (every process's log)")
    p.add_argument("--host-alsa", action="store_true", help="give the phones this machine's ALSA configuration")
    p.add_argument("-v", "--verbose", action="store_true", help="print every run")
    args = p.parse_args(argv)
    if not 1 <= args.phones <= 99 or args.runs < 1:
        p.error("--phones must be 1..99 and --runs at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.chdir(REPO)
    work = Path(tempfile.mkdtemp(prefix="firmware-app-fleet-"))
    say(f"work folder {work}")
    results: dict[str, Any] = {"machine": machine(),
                               "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    try:
        with FleetBench(args, work) as bench:
            results["runs"] = bench.run()
    except BenchError as e:  # the phones or the fleet command failed
        say(f"failed: {e}; work folder kept: {work}")
        return 1
    except PeerError as e:  # Kamailio or Mosquitto would not start: the bench could not run
        say(f"could not run: {e}; work folder kept: {work}")
        return 2
    except BaseException:
        say(f"failed; work folder kept: {work}")
        raise
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    results["machine"]["loadavg_end"] = os.getloadavg()
    print()
    print(report(results))
    if args.keep:
        print(f"work folder kept: {work}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
        say(f"figures in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
