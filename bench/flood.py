"""``python -m bench flood``: INVITEs from an untrusted address straight to the phone, at rising rates.

The phone (user 1000, registered at its own Kamailio) trusts only the registrar's address (the default
``security.trusted_sources``). sipp, bound to 127.0.0.2, sends INVITEs to the phone's own SIP port at each
rate in turn for a fixed time; the phone should answer each with 403. After each step: is the process alive,
does ``status`` still say registered, what is its RSS, and does a legitimate call through the proxy ring
and get answered by the ``answer`` command? The first step the phone fails ends the run; the highest rate
it survived is the headline. Exit status 1 when the phone failed a step, 0 when it survived them all.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.stress import PHONE_USER, SCENARIOS, Sipp, Stage, free_udp_port, say

RATES = (50, 100, 200, 400, 800, 1600)
SCANNER = "127.0.0.2"  # on loopback, but not the registrar's address: untrusted
RECV_TIMEOUT_MS = 5000  # sipp's wait for a final response before it counts the INVITE as unanswered


@dataclass
class Step:
    rate: int  # INVITEs per second offered
    seconds: float
    sent: int = 0  # INVITEs sipp actually sent
    finals: dict[str, int] = field(default_factory=dict)  # final responses by status code
    finals_per_s: float = 0.0  # over the step, or the span the finals arrived in when that is longer
    unexpected: int = 0  # responses sipp had no <recv> for (see its error log)
    alive: bool = False
    registered: bool = False
    legit: str | None = "not tried"  # None: the legitimate call was answered
    rss_mb: float | None = None
    death: str = ""  # how the phone died, when it did

    @property
    def survived(self) -> bool:
        return self.alive and self.registered and self.legit is None

    @property
    def unanswered(self) -> int:
        return self.sent - sum(self.finals.values())


def flood_step(stage: Stage, rate: int, seconds: float, work: Path) -> Step:
    host, port = stage.sip_address()
    step = Step(rate, seconds)
    count = max(1, round(rate * seconds))
    sipp = Sipp(f"flood-{rate}", [
        f"{host}:{port}", "-sf", str(SCENARIOS / "flood_invite.xml"), "-s", PHONE_USER, "-t", "u1",
        "-i", SCANNER, "-p", str(free_udp_port(SCANNER)), "-mi", SCANNER, "-mp", str(free_udp_port(SCANNER)),
        "-r", str(rate), "-rp", "1000", "-m", str(count),
        "-recv_timeout", str(RECV_TIMEOUT_MS), "-default_behaviors", "all,-bye",
        "-timeout", f"{int(seconds * 3 + 30)}s",  # sipp's own end, should it fall far behind
    ], work / "sipp")
    started = time.monotonic()
    try:
        sipp.start().wait(seconds * 3 + 60)
    finally:
        sipp.stop()  # only does something when the wait was cut short
    stats = sipp.stats()
    step.sent = int(stats.get("OutgoingCall(C)", "0") or 0)
    step.unexpected = int(stats.get("FailedUnexpectedMessage(C)", "0") or 0)
    ticks = []
    finals: Counter[str] = Counter()
    for words in sipp.log_lines():  # "CALL-ID final CODE CLOCK_TICK"
        if len(words) >= 4 and words[1] == "final":
            finals[words[2]] += 1
            ticks.append(int(words[3]))
    step.finals = dict(sorted(finals.items()))
    span = (max(ticks) - min(ticks)) / 1000 if ticks else 0.0
    step.finals_per_s = len(ticks) / max(span, seconds)
    say(f"  {rate}/s: sent {step.sent} in {time.monotonic() - started:.1f} s, finals {step.finals}")

    step.alive = stage.alive()
    if not step.alive:
        step.death = stage.death()
        return step
    step.rss_mb = stage.rss_mb()
    step.registered = stage.registered()
    step.legit = stage.legit_call()
    return step


def report(steps: list[Step], work_note: str) -> str:
    if not steps:
        return "no step ran"
    lines = [
        "| offered (INVITE/s) | sent | final responses | finals/s | no final | alive | registered | legit call "
        "| RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in steps:
        codes = ", ".join(f"{n}×{code}" for code, n in s.finals.items()) or "none"
        lines.append(
            f"| {s.rate} | {s.sent} | {codes} | {s.finals_per_s:.0f} | {s.unanswered}"
            f"{f' ({s.unexpected} unexpected)' if s.unexpected else ''} | {_yes(s.alive)} | "
            f"{_yes(s.registered) if s.alive else '—'} | {'answered' if s.legit is None else s.legit} | "
            f"{'—' if s.rss_mb is None else f'{s.rss_mb:.1f}'} |"
        )
    survived = [s.rate for s in steps if s.survived]
    failed = next((s for s in steps if not s.survived), None)
    best = f"{max(survived)} INVITEs/s" if survived else f"none (failed at the first step, {steps[0].rate}/s)"
    lines += ["", f"highest rate survived: {best}"]
    if failed is not None:
        why = failed.death or ("not registered" if not failed.registered else f"legitimate call: {failed.legit}")
        lines.append(f"failed at {failed.rate}/s: {why}")
    else:
        lines.append("the phone survived every step")
    lines.append(work_note)
    return "\n".join(lines)


def _yes(value: bool) -> str:
    return "yes" if value else "**no**"


def parse(argv: list[str] | None) -> argparse.Namespace:
    summary = __doc__.split("\n\n")[0].split(": ", 1)[1]  # the docstring's first line, without the command
    p = argparse.ArgumentParser(prog="python -m bench flood", description=summary)
    p.add_argument("--rates", default=",".join(map(str, RATES)),
                   help=f"INVITEs per second, one step each, in order (default {','.join(map(str, RATES))})")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each step (default 10)")
    p.add_argument("--host-alsa", action="store_true", help="this machine's ALSA configuration, not the image's")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--keep", action="store_true", help="keep the work folder (phone, Kamailio and sipp logs)")
    args = p.parse_args(argv)
    args.rates = [int(r) for r in args.rates.split(",") if r]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    work = Path(tempfile.mkdtemp(prefix="firmware-app-flood-"))
    say(f"work folder {work}")
    steps: list[Step] = []
    rss0: float | None = None
    try:
        with Stage(work, host_alsa=args.host_alsa) as stage:
            host, port = stage.sip_address()
            say(f"flood: INVITEs from {SCANNER} to the phone at {host}:{port}, {args.seconds:.0f} s per step, "
                f"rates {args.rates}")
            rss0 = stage.rss_mb()
            if (legit := stage.legit_call()) is not None:
                say(f"a legitimate call failed before any flood: {legit}")
                return 2
            for rate in args.rates:
                steps.append(flood_step(stage, rate, args.seconds, work))
                if not steps[-1].survived:
                    break
    finally:
        note = f"work folder kept: {work}" if args.keep else ""
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"untrusted INVITE flood from {SCANNER} straight to the phone's SIP port, {args.seconds:.0f} s per step; "
          f"RSS before: {rss0:.1f} MB")
    print()
    print(report(steps, note))
    if args.json:
        args.json.write_text(json.dumps({"rss_before_mb": rss0, "steps": [asdict(s) for s in steps]}, indent=1))
    return 0 if all(s.survived for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
