"""``python -m bench soak``: two callers and the phone's own decisions race each other over thousands of calls.

Two sipp callers (users 1001 and 1002, registered with digest auth) ring the phone (1000) through Kamailio at
a steady rate, each call with a plan drawn from the seed: CANCEL 0-300 ms after the 180, or wait for the
answer (up to 1 s of ringing) and BYE 0.1-1 s later unless the phone hangs up first. On the phone's side a
driver follows the control socket's event stream and answers, rejects (480) or lets ring each call it is
shown, after 0-300 ms, and hangs up first some of the calls it answered.

Afterwards, once the phone is quiet: what the callers got, what the driver did, calls the phone declined on
its own (PJSUA's ``hanging up: code=0`` on a call the phone did not end, 603s the driver never asked for: a
freed call's PJSUA2 object hanging up the call that reused its slot), stuck calls (``status`` not idle, calls
PJSUA holds or the phone believes in that PJSUA does not have), whether a last legitimate call is answered,
and RSS before and after. Exit status 1 when the phone failed any of these.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import random
import re
import select
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import BenchError, wait
from bench.stress import PHONE_USER, SCENARIOS, USERS, Sipp, Stage, free_udp_port, say
from tests.peers.sipp import register

CALLERS = ("1001", "1002")
BODY = """\
[logging]
level = "debug"
pjsip_level = 4    # PJSUA's "Call N hanging up: code=0" is a level-4 line

[plugins]
modules = ["bench.soak_probe"]
"""

# The driver: what it does with each call it is shown, and when.
ANSWER, REJECT = 0.40, 0.25  # the rest rings until the caller gives up
ACT_WITHIN_S = 0.300
HANG_UP_FIRST = 0.30  # of the calls it answered
HANG_UP_AFTER_S = (0.05, 0.80)
REJECT_CODE = 480  # not the phone's own 486 (busy) nor PJSUA's 603: each refusal says who made it


# --- the callers' plans ---------------------------------------------------------------------------------------


#: The waits race_caller.xml offers (each has an entry of its own there), in ms.
CANCEL_AFTER_MS = (0, 50, 100, 150, 200, 250, 300)
GIVE_UP_MS = 1000
TALK_MS = (100, 250, 500, 1000)


def plans(rng: random.Random, count: int) -> list[str]:
    """One injection line per call, "RING_MS;TALK_MS;PLAN" (race_caller.xml)."""
    lines = []
    for _ in range(count):
        talk = rng.choice(TALK_MS)  # in the call before the caller's BYE, if it is answered
        if rng.random() < 0.5:
            lines.append(f"{rng.choice(CANCEL_AFTER_MS)};{talk};cancel")  # CANCEL soon after the 180
        else:
            lines.append(f"{GIVE_UP_MS};{talk};talk")  # wait for the answer; CANCEL after 1 s of ringing
    return lines


def start_caller(stage: Stage, user: str, lines: list[str], rate: float, work: Path) -> Sipp:
    port = free_udp_port("127.0.0.1")
    register(user, USERS[user], stage.pbx, port, workdir=work)  # the caller's contact, with digest auth
    plan_file = work / f"plan-{user}.csv"
    plan_file.write_text("SEQUENTIAL\n" + "\n".join(lines) + "\n")
    seconds = len(lines) / rate
    return Sipp(f"caller-{user}", [
        stage.pbx.domain, "-sf", str(SCENARIOS / "race_caller.xml"), "-s", PHONE_USER, "-t", "u1",
        "-i", "127.0.0.1", "-p", str(port), "-mi", "127.0.0.1", "-mp", str(free_udp_port("127.0.0.1")),
        "-set", "caller", user, "-inf", str(plan_file),
        # -r calls per -rp ms: fractional rates per caller without rounding
        "-r", str(round(rate * 10)), "-rp", "10000", "-m", str(len(lines)), "-l", "200",
        "-timeout", f"{int(seconds + 60)}s",
    ], work).start()


@dataclass
class CallerCall:
    """One call as its caller saw it: the scenario's log lines in order."""

    steps: list[str] = field(default_factory=list)

    @property
    def finals(self) -> list[int]:
        return [int(s.split()[1]) for s in self.steps if s.startswith("final ")]

    def has(self, step: str) -> bool:
        return step in self.steps


def caller_calls(callers: list[Sipp]) -> dict[str, CallerCall]:
    calls: dict[str, CallerCall] = {}
    for sipp in callers:
        for words in sipp.log_lines():
            calls.setdefault(words[0], CallerCall()).steps.append(" ".join(words[1:]))
    return calls


# --- the phone's side --------------------------------------------------------------------------------------------


@dataclass
class Shown:
    """A call the phone announced, and what the driver did with it."""

    id: int
    sip_call_id: str
    decision: str  # answer, reject or ring
    result: str = ""  # "ok" or the phone's refusal (the call was gone: a race the driver lost)
    hang_up: str = ""  # for an answered call the driver hangs up first: "ok" or the refusal
    states: list[str] = field(default_factory=list)


class Driver:
    """The phone's user: follows the event stream and acts on each new call through the control socket."""

    def __init__(self, stage: Stage, rng: random.Random, record: Path) -> None:
        self.stage = stage
        self.rng = rng
        self._record = open(record, "wb")  # noqa: SIM115 - every event as it came, for --keep
        self.closed = False  # the phone ended the stream: it stopped or died
        self.shown: dict[int, Shown] = {}
        self.busy: set[int] = set()  # calls the phone refused itself with 486 while in another (call_waiting)
        self._due: list[tuple[float, int, str]] = []  # (when, call id, what): a heap
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(5.0)
        self._sock.connect(str(stage.phone.socket_path))
        self._sock.sendall(b'{"cmd": "events"}\n')
        self._buffer = b""
        deadline = time.monotonic() + 5.0
        while b"\n" not in self._buffer:  # the stream opens with the current status: one line to skip
            chunk = self._sock.recv(65536)
            if not chunk or time.monotonic() > deadline:
                raise BenchError("the phone's event stream did not open")
            self._buffer += chunk
        self._buffer = self._buffer.partition(b"\n")[2]
        self._sock.setblocking(False)

    def close(self) -> None:
        self._sock.close()
        self._record.close()

    def run(self, seconds: float) -> None:
        """Read events and act on what is due, for ``seconds``."""
        until = time.monotonic() + seconds
        while not self.closed and (now := time.monotonic()) < until:
            wake = min(until, self._due[0][0]) if self._due else until
            readable, _, _ = select.select([self._sock], [], [], max(0.0, wake - now))
            if readable:
                self._read_lines()
            while self._due and self._due[0][0] <= time.monotonic():
                _, call_id, what = heapq.heappop(self._due)
                self._act(call_id, what)

    def _read_lines(self) -> None:
        try:
            chunk = self._sock.recv(65536)
        except BlockingIOError:
            return
        if not chunk:
            self.closed = True
            return
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._record.write(line + b"\n")
            message = json.loads(line)
            if "event" in message:
                self._on_event(message)

    def _on_event(self, event: dict[str, Any]) -> None:
        if event["event"] == "call_waiting":  # comes before that call's own events
            self.busy.add(event["call_id"])
        if event["event"] != "call" or event.get("direction") != "incoming" or event["id"] in self.busy:
            return
        call_id, state = event["id"], event["state"]
        shown = self.shown.get(call_id)
        if shown is None and state == "ringing":
            roll = self.rng.random()
            decision = "answer" if roll < ANSWER else "reject" if roll < ANSWER + REJECT else "ring"
            shown = self.shown[call_id] = Shown(call_id, event.get("sip_call_id", ""), decision)
            if decision != "ring":
                self._schedule(self.rng.uniform(0, ACT_WITHIN_S), call_id, decision)
        if shown is None:
            return
        shown.states.append(state)
        if state == "active" and shown.decision == "answer" and "active" not in shown.states[:-1]:
            if self.rng.random() < HANG_UP_FIRST:
                self._schedule(self.rng.uniform(*HANG_UP_AFTER_S), call_id, "hangup")

    def _schedule(self, delay: float, call_id: int, what: str) -> None:
        heapq.heappush(self._due, (time.monotonic() + delay, call_id, what))

    def _act(self, call_id: int, what: str) -> None:
        message: dict[str, Any] = {"cmd": what, "call": call_id}
        if what == "reject":
            message["code"] = REJECT_CODE
        reply = self.stage.request(message)
        result = "ok" if reply and reply.get("ok") else (reply or {}).get("error", "no reply")
        shown = self.shown[call_id]
        if what == "hangup":
            shown.hang_up = result
        else:
            shown.result = result


# --- after the calls ------------------------------------------------------------------------------------------------


@dataclass
class Quiet:
    seconds: float  # from the callers' end until the phone was idle with no calls, PJSUA's included
    reached: bool
    status: dict[str, Any] | None
    probe: dict[str, Any] | None

    @property
    def ghosts(self) -> list[int]:
        """Calls the phone shows whose PJSUA slot PJSUA no longer has."""
        if not self.probe:
            return []
        slots = self.probe["engine"]
        return [c for c in self.probe["phone"] if slots.get(str(c)) not in self.probe["pjsua"]]

    @property
    def unknown(self) -> list[int]:
        """PJSUA calls that no call the phone shows holds."""
        if not self.probe:
            return []
        held = {self.probe["engine"].get(str(c)) for c in self.probe["phone"]}
        return [slot for slot in self.probe["pjsua"] if slot not in held]

    @property
    def stuck(self) -> bool:
        if self.status is None or self.probe is None:
            return True
        return self.status["state"] != "idle" or bool(self.status["calls"] or self.probe["pjsua"])


def wait_for_quiet(stage: Stage, driver: Driver, limit: float) -> Quiet:
    """Keep driving until the phone and PJSUA hold no call for 2 s in a row, at most ``limit`` seconds."""
    started = time.monotonic()
    quiet_since: float | None = None
    status = probe = None
    while time.monotonic() - started < limit and not driver.closed:
        driver.run(0.25)
        status = stage.status()
        reply = stage.request({"cmd": "action", "name": "bench_calls"})
        probe = reply["result"] if reply and reply.get("ok") else None
        idle = bool(status and probe and status["state"] == "idle" and not status["calls"] and not probe["pjsua"])
        if not idle:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= 2.0:
            return Quiet(quiet_since - started, True, status, probe)
    return Quiet(time.monotonic() - started, False, status, probe)


def phone_log_counts(stage: Stage) -> dict[str, int]:
    text = stage.log_path.read_text(errors="replace")
    return {
        # PJSUA's hang-up with no status code: the phone's own hangup, or a Call object's destructor
        "pjsua_hangup_code0": len(re.findall(r"hanging up: code=0\b", text)),
        "phone_hangups": len(re.findall(r"firmware_app\.phone: call \d+: hanging up$", text, re.MULTILINE)),
        "errors": len(re.findall(r"^\S+ (?:ERROR|CRITICAL) ", text, re.MULTILINE)),
        "tracebacks": text.count("Traceback (most recent call last)"),
    }


# --- the report -------------------------------------------------------------------------------------------------


def summarize(calls: dict[str, CallerCall], offered: int, driver: Driver, log: dict[str, int],
              stats: list[dict[str, str]]) -> dict[str, Any]:
    finals: Counter[int] = Counter()
    for call in calls.values():
        finals.update(call.finals[:1])
    answered = [c for c in calls.values() if 200 in c.finals]
    by_sip_id = {s.sip_call_id: s for s in driver.shown.values()}
    declined = [cid for cid, c in calls.items() if 603 in c.finals]
    decisions = Counter(s.decision for s in driver.shown.values())
    lost = Counter(s.decision for s in driver.shown.values() if s.result not in ("", "ok"))
    return {
        "planned": offered,
        "offered": sum(int(s.get("OutgoingCall(C)", "0") or 0) for s in stats),  # INVITEs the callers sent
        "answered": len(answered),
        "answered_after_cancel": sum(1 for c in answered if c.has("cancel")),
        "completed": sum(1 for c in answered if c.has("bye_answered 200 BYE") or c.has("bye_received")
                         or c.has("bye_crossed")),
        "hung_up_by_caller": sum(1 for c in answered if c.has("bye_sent")),
        "hung_up_by_phone": sum(1 for c in answered if c.has("bye_received") or c.has("bye_crossed")),
        "bye_481": sum(1 for c in answered if c.has("bye_answered 481")),
        "bye_unanswered": sum(1 for c in answered if c.has("bye_unanswered")),
        "cancelled": sum(1 for c in calls.values() if c.has("cancel") and 487 in c.finals),
        "rejected_by_driver": finals[REJECT_CODE],
        "busy_486": finals[486],
        "declined_603": len(declined),
        "declined_603_shown_to_driver": Counter(by_sip_id[cid].decision for cid in declined if cid in by_sip_id),
        "other_finals": {str(code): n for code, n in sorted(finals.items())
                         if code not in (200, 487, REJECT_CODE, 486, 603)},
        "no_final": sum(1 for c in calls.values() if not c.finals),
        "deferred": sum(1 for c in calls.values() if c.has("deferred")),
        "sipp_failed_calls": sum(int(s.get("FailedCall(C)", "0") or 0) for s in stats),
        "sipp_unexpected": sum(int(s.get("FailedUnexpectedMessage(C)", "0") or 0) for s in stats),
        "shown_to_driver": len(driver.shown),
        "driver_decisions": dict(decisions),
        "driver_too_late": dict(lost),
        "driver_hung_up_first": sum(1 for s in driver.shown.values() if s.hang_up == "ok"),
        "phone_busy_486": len(driver.busy),
        "pjsua_hangup_code0": log["pjsua_hangup_code0"],
        "phone_hangups": log["phone_hangups"],
        "slot_reuse_hangups": log["pjsua_hangup_code0"] - log["phone_hangups"],
        "phone_log_errors": log["errors"],
        "phone_log_tracebacks": log["tracebacks"],
    }


def report(s: dict[str, Any], end: dict[str, Any]) -> str:
    d = s["driver_decisions"]
    too_late = s["driver_too_late"]
    q: Quiet = end["quiet"]
    rows = [
        ("calls offered (2 callers)",
         f"{s['offered']}" + (f" of {s['planned']} planned" if s["offered"] < s["planned"] else "")),
        ("answered (200 to the caller)", f"{s['answered']}, of which {s['answered_after_cancel']} after the "
                                         f"caller's CANCEL"),
        ("  completed (BYE answered)", f"{s['completed']}: hung up by the caller {s['hung_up_by_caller']}, by the "
                                       f"phone {s['hung_up_by_phone']}; BYE answered 481: {s['bye_481']}, "
                                       f"unanswered: {s['bye_unanswered']}"),
        ("cancelled (CANCEL, then 487)", str(s["cancelled"])),
        (f"rejected by the driver ({REJECT_CODE})", str(s["rejected_by_driver"])),
        ("busy (486: the phone was in another call)", f"{s['busy_486']} ({s['phone_busy_486']} call_waiting "
                                                      f"events)"),
        ("other final responses, which no one asked for",
         ", ".join(f"**{n}×{c}**" for c, n in s["other_finals"].items()) or "none"),
        ("no final response", str(s["no_final"])),
        ("sipp's failed calls (of which unexpected messages)",
         f"{s['sipp_failed_calls']} ({s['sipp_unexpected']}); messages handed to the next step: {s['deferred']}"),
        ("driver: calls shown / answer / reject / let ring",
         f"{s['shown_to_driver']} / {d.get('answer', 0)} / {d.get('reject', 0)} / {d.get('ring', 0)}; too late "
         f"(the call had gone): answer {too_late.get('answer', 0)}, reject {too_late.get('reject', 0)}; "
         f"hung up first {s['driver_hung_up_first']}"),
        ("**declined by slot reuse**: 603s no one asked for",
         f"{_flag(s['declined_603'])}" + (f" (the driver had chosen: {dict(s['declined_603_shown_to_driver'])})"
                                          if s["declined_603"] else "")),
        ("**declined by slot reuse**: PJSUA `hanging up: code=0` the phone did not ask for",
         f"{_flag(s['slot_reuse_hangups'])} ({s['pjsua_hangup_code0']} in all, {s['phone_hangups']} the phone's "
         f"own hang-ups)"),
        ("**stuck calls** after the quiet wait", _stuck(q) if end["alive"] else "— (the phone died)"),
        ("quiet after the callers ended", "—" if not end["alive"] else
         f"{q.seconds:.1f} s" + ("" if q.reached else " (**never**, gave up)")),
        ("alive / registered at the end", f"{_yes(end['alive'])} / {_yes(end['registered'])}"),
        ("last legitimate call", "answered" if end["legit"] is None else f"**{end['legit']}**"),
        ("RSS before → after, peak (MB)",
         f"{_mb(end['rss_before'])} → {_mb(end['rss_after'])}, {_mb(end['rss_peak'])}"),
        ("phone log: ERROR lines, tracebacks", f"{s['phone_log_errors']}, {s['phone_log_tracebacks']}"),
    ]
    return "\n".join(["| | |", "|---|---|"] + [f"| {what} | {value} |" for what, value in rows])


def _stuck(q: Quiet) -> str:
    if q.status is None or q.probe is None:
        return "**the phone did not answer status or bench_calls**"
    return (f"{'none' if not q.stuck else '**yes**'}: state {q.status['state']}, {len(q.status['calls'])} calls in "
            f"status, PJSUA holds {q.probe['pjsua']}; ghosts (the phone's, not PJSUA's) {_flag(len(q.ghosts))}, "
            f"PJSUA's unknown to the phone {_flag(len(q.unknown))}")


def failures(s: dict[str, Any], end: dict[str, Any]) -> list[str]:
    q: Quiet = end["quiet"]
    out = []
    if not end["alive"]:
        out.append(f"the phone died ({end['death']})")
    if end["alive"] and not end["registered"]:
        out.append("not registered")
    if s["declined_603"] or s["slot_reuse_hangups"] > 0:
        out.append("calls declined by slot reuse")
    if s["other_finals"]:
        out.append("calls refused with " + ", ".join(s["other_finals"]) + " that no one asked for")
    if end["alive"] and (q.stuck or q.ghosts or q.unknown):
        out.append("stuck calls")
    if end["legit"] is not None:
        out.append("the last legitimate call was not answered")
    return out


def _flag(n: int) -> str:
    return str(n) if n == 0 else f"**{n}**"


def _yes(value: bool) -> str:
    return "yes" if value else "**no**"


def _mb(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


# --- main ---------------------------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    summary = __doc__.split("\n\n")[0].split(": ", 1)[1]  # the docstring's first line, without the command
    p = argparse.ArgumentParser(prog="python -m bench soak", description=summary)
    p.add_argument("--calls", type=int, default=2000, help="calls in all, split between the two callers (2000)")
    p.add_argument("--rate", type=float, default=40.0, help="new calls per second, both callers together (40)")
    p.add_argument("--seed", type=int, help="the seed of the callers' plans and the driver's choices (random)")
    p.add_argument("--quiet", type=float, default=40.0,
                   help="longest wait for the phone to hold no call after the callers ended, s (40: PJSIP keeps "
                        "an unacknowledged answer up to 32 s)")
    p.add_argument("--host-alsa", action="store_true", help="this machine's ALSA configuration, not the image's")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--keep", action="store_true", help="keep the work folder (phone, Kamailio and sipp logs)")
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    return args


def soak(stage: Stage, args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the callers against the driven phone, wait for quiet, look at what is left: (summary, end state)."""
    plan_rng, driver_rng = random.Random(f"{args.seed}:callers"), random.Random(f"{args.seed}:driver")
    per_caller = [args.calls // len(CALLERS) + (i < args.calls % len(CALLERS)) for i in range(len(CALLERS))]
    time.sleep(2.0)  # settle after registration before the first RSS
    end: dict[str, Any] = {"rss_before": stage.rss_mb()}
    driver = Driver(stage, driver_rng, work / "events.jsonl")
    callers: list[Sipp] = []
    try:
        say(f"soak: {args.calls} calls at {args.rate:g}/s from {' and '.join(CALLERS)} to {PHONE_USER}")
        for user, count in zip(CALLERS, per_caller):
            callers.append(start_caller(stage, user, plans(plan_rng, count), args.rate / len(CALLERS), work / "sipp"))
        deadline = time.monotonic() + args.calls / args.rate + 90
        reported = time.monotonic()
        while any(c.running() for c in callers) and time.monotonic() < deadline and not driver.closed:
            driver.run(0.5)
            if time.monotonic() - reported >= 10:
                reported = time.monotonic()
                say(f"  {len(driver.shown)} calls shown to the driver, RSS {_mb(stage.rss_mb())} MB")
    finally:
        for caller in callers:
            caller.stop()  # at the deadline, or the phone died: what they logged so far is the result
    if driver.closed:  # the phone is going: give it time to be gone (a core dump takes seconds)
        with contextlib.suppress(BenchError):
            wait(lambda: not stage.alive(), 20, "the phone to exit", interval=0.1)
    try:
        say("callers done; waiting for the phone to be quiet")
        end["quiet"] = wait_for_quiet(stage, driver, args.quiet) if stage.alive() else Quiet(0, False, None, None)
    finally:
        driver.close()
    end["alive"] = stage.alive()
    end["death"] = "" if end["alive"] else stage.death()
    end["registered"] = end["alive"] and stage.registered()
    end["rss_after"] = stage.rss_mb()
    end["rss_peak"] = stage.peak_rss_mb()
    end["legit"] = stage.legit_call() if end["alive"] else "the phone is dead"
    summary = summarize(caller_calls(callers), args.calls, driver, phone_log_counts(stage),
                        [c.stats() for c in callers])
    return summary, end


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    work = Path(tempfile.mkdtemp(prefix="firmware-app-soak-"))
    say(f"work folder {work}; seed {args.seed} (repeat with --seed {args.seed})")
    try:
        with Stage(work, BODY, host_alsa=args.host_alsa) as stage:
            summary, end = soak(stage, args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"race soak: {args.calls} calls at {args.rate:g}/s from {len(CALLERS)} callers, seed {args.seed} "
          f"(repeat: python -m bench soak --seed {args.seed} --calls {args.calls} --rate {args.rate:g})")
    print()
    print(report(summary, end))
    failed = failures(summary, end)
    print()
    print("the phone: " + ("no failure" if not failed else "**failed**: " + "; ".join(failed)))
    if args.keep:
        print(f"work folder kept: {work}")
    if args.json:
        quiet: Quiet = end["quiet"]
        args.json.write_text(json.dumps({"seed": args.seed, "summary": summary, **end, "quiet": asdict(quiet)},
                                        indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
