"""``python -m bench.profile WHAT``: where the app's time and memory go, for the figures ``python -m bench`` gives.

    latency   py-spy (--nonblocking: Python frames) on the phone while it answers presses; the split of edge -> wire into
              "edge -> phone loop" and "loop -> 200 OK" (BENCH_PROBE); the functions with the most samples
    startup   ``-X importtime`` of ``firmware-app run``: the imports that take the longest
    memory    RSS, layer by layer, as the app's process loads them (Python, PJSUA2, libInit, asyncio, ...)

Run it on a quiet machine where you can: a profiler's samples are as noisy as the machine. Files go to --out.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.__main__ import BENCH_PLUGIN, CALLER, DEVICE, USERS, device_alsa_conf, say
from bench.harness import REPO, AppPhone, Caller, Cycle, Wire, match_wire, wait
from tests.peers.baresip import Baresip
from tests.peers.kamailio import Kamailio


def _py_spy() -> str:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return spy


def summarize_collapsed(path: Path, top: int = 25, thread: str | None = None) -> list[str]:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks ("a;b;c N" lines)."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if thread and thread not in frames[0]:
            continue
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames[1:]):
            incl[frame] += n
    out = [f"{total} samples" + (f" on threads matching {thread!r}" if thread else "")]
    out.append("self:")
    out += [f"  {n:6d} {100 * n / max(total, 1):5.1f} %  {f}" for f, n in own.most_common(top)]
    out.append("inclusive:")
    out += [f"  {n:6d} {100 * n / max(total, 1):5.1f} %  {f}" for f, n in incl.most_common(top)]
    return out


def latency(args: argparse.Namespace, work: Path, out: Path) -> None:
    env = {"BENCH_PROBE": "1", "ALSA_CONFIG_PATH": str(device_alsa_conf(work))}
    with Kamailio(work / "kamailio", USERS) as pbx:
        wire = Wire(pbx)
        ua = Baresip(work / "caller", CALLER, USERS[CALLER], pbx).start()
        app = AppPhone(work / "app", pbx, "1000", USERS["1000"], DEVICE + BENCH_PLUGIN, env)
        spy = None
        try:
            app.start()
            app.connect()
            wait(app.registered, 15, "registration")
            time.sleep(2)
            raw = out / "latency.collapsed"
            spy = subprocess.Popen([_py_spy(), "record", "--pid", str(app.pid), "--rate", str(args.rate),
                                    "--threads", "--nonblocking", "--format", "raw", "--output", str(raw)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
            cycle = Cycle(Caller(ua, pbx))
            probes: list[float] = []
            for i in range(args.presses):
                cycle.call(app, "pin" if i % 2 == 0 else "control")
                probes += app.probes()
            spy.send_signal(2)
            spy.wait(30)
            match_wire(cycle.presses, wire)
        finally:
            if spy is not None and spy.poll() is None:
                spy.kill()
            ua.stop()
            app.stop()
    lines = []
    for path in ("pin", "control"):
        ps = [(p, q) for p, q in zip(cycle.presses, probes, strict=False) if p.path == path and p.wire]
        to_loop = [(q - p.edge) * 1000 for p, q in ps]
        to_wire = [(p.wire - q) * 1000 for p, q in ps if p.wire]
        total = [p.latency_ms for p, _ in ps]
        lines.append(f"{path}: n={len(ps)} edge->wire p50 {statistics.median(total):.2f} ms = edge -> phone loop "
                     f"(map_input hook) p50 {statistics.median(to_loop):.2f} ms + loop -> 200 OK at the proxy "
                     f"p50 {statistics.median(to_wire):.2f} ms")
        cut = sorted(total)[int(0.9 * len(total))]
        tail = [(a, b, t) for a, b, t in zip(to_loop, to_wire, total, strict=True) if t >= cut]
        lines.append(f"  slowest 10 % (>= {cut:.2f} ms): " + ", ".join(
            f"{t:.2f} = {a:.2f} + {b:.2f}" for a, b, t in sorted(tail, key=lambda x: -x[2])))
    lines += summarize_collapsed(raw)
    (out / "latency.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def startup(args: argparse.Namespace, work: Path, out: Path) -> None:
    env = {"PYTHONPROFILEIMPORTTIME": "1", "ALSA_CONFIG_PATH": str(device_alsa_conf(work))}
    with Kamailio(work / "kamailio", USERS) as pbx:
        wire = Wire(pbx)
        app = AppPhone(work / "app", pbx, "1000", USERS["1000"], DEVICE, env)
        started = app.start()
        try:
            t = wait(lambda: wire.register_ok_after("1000", started), 30, "registration")
        finally:
            app.stop()
    rows = []
    for line in (work / "app" / "phone.log").read_text(errors="replace").splitlines():
        if line.startswith("import time:") and "|" in line:
            parts = [p.strip() for p in line[len("import time:"):].split("|")]
            if parts[0].isdigit():
                rows.append((int(parts[1]), int(parts[0]), parts[2]))
    top_level = sorted(((c, s, n) for c, s, n in rows if not n.startswith(" ")), reverse=True)
    lines = [f"start -> REGISTER 200: {t - started:.3f} s (this run, with -X importtime's own overhead)",
             f"imports: {sum(s for _, s, _ in rows) / 1e6:.3f} s in all; top-level imports by cumulative time:"]
    lines += [f"  {c / 1000:8.1f} ms  {n.strip()}" for c, s, n in top_level[:20]]
    lines.append("slowest single modules (self time):")
    lines += [f"  {s / 1000:8.1f} ms  {n.strip()}" for c, s, n in sorted(rows, key=lambda r: -r[1])[:15]]
    (out / "startup.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


MEMORY_STEPS = r"""
import json, sys
def rss():
    d = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "RssAnon", "RssFile"):
            d[k] = int(v.split()[0])
    return d
steps = [("python", rss())]
import pjsua2 as pj
steps.append(("import pjsua2", rss()))
ep = pj.Endpoint(); ep.libCreate(); c = pj.EpConfig(); c.uaConfig.threadCnt = 0
c.medConfig.hasIoqueue = False; c.medConfig.threadCnt = 0; c.logConfig.level = c.logConfig.consoleLevel = 0
ep.libInit(c); ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, pj.TransportConfig()); ep.libStart()
steps.append(("PJSUA2 libInit + libStart", rss()))
for group in sys.argv[1:]:
    for mod in group.split(","):
        __import__(mod)
    steps.append(("import " + group.replace(",", ", "), rss()))
print(json.dumps(steps))
"""

# The app's imports in the order its process makes them (cli -> app -> phone -> engine, then the plugins).
LAYERS = [
    "asyncio",
    "logging,json,msgspec,pluggy",
    "firmware_app.app,firmware_app.control,firmware_app.engine",
    "softphone_calls,softphone_buttons,softphone_transfer,softphone_audio,alsaaudio",
    "gpiozero,softphone_gpio",
    "softphone_headset_keys,evdev",
    "softphone_ble,bleak,dbus_fast,bleak_retry_connector",
]


def memory(args: argparse.Namespace, work: Path, out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "GPIOZERO_PIN_FACTORY": "mock",
           "ALSA_CONFIG_PATH": str(device_alsa_conf(work))}
    if args.host_alsa:
        env.pop("ALSA_CONFIG_PATH")
    done = subprocess.run([sys.executable, "-c", MEMORY_STEPS, *LAYERS], capture_output=True, text=True, env=env,
                          cwd=REPO, check=True)
    steps: list[tuple[str, dict[str, int]]] = json.loads(done.stdout.strip().splitlines()[-1])
    lines = ["RSS as the app's process loads each layer (kB; added by the layer, then the total):",
             f"  {'layer':70s} {'+RSS':>7s} {'+anon':>7s} {'+file':>7s} {'RSS':>7s}"]
    previous = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    for name, r in steps:
        lines.append(f"  {name:70s} {r['VmRSS'] - previous['VmRSS']:7d} {r['RssAnon'] - previous['RssAnon']:7d} "
                     f"{r['RssFile'] - previous['RssFile']:7d} {r['VmRSS']:7d}")
        previous = r
    (out / "memory.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["latency", "startup", "memory"], nargs="+")
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "firmware-app-profile")
    p.add_argument("--presses", type=int, default=200, help="presses for the latency profile (default 200)")
    p.add_argument("--rate", type=int, default=1000, help="py-spy samples per second (default 1000)")
    p.add_argument("--host-alsa", action="store_true", help="this machine's ALSA configuration (memory)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.chdir(REPO)
    for what in args.what:
        work = Path(tempfile.mkdtemp(prefix=f"firmware-app-profile-{what}-"))
        try:
            say(f"profile {what}: files in {args.out}")
            {"latency": latency, "startup": startup, "memory": memory}[what](args, work, args.out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
