"""``python -m bench pool``: a blind transfer to a pool whose first agent is busy, ``available`` vs ``ordered``.

Issue 15 asks for "the time from 'transfer pressed' to the target's 200 OK for ``available`` versus ``ordered``
when the first agent is busy". One presence-enabled Kamailio (tests/peers/kamailio_blf.py: it publishes every
call's dialog state, RFC 4235), one phone (``firmware-app run``, user 1000, bench/harness.py's AppPhone) with
two pools over the same two agents, A (1003) then B (1004): ``ordered`` and ``available``.

- Agent A is busy for the whole run: a baresip with ``answermode=auto`` in a call with another baresip (1005),
  with ``max_calls=1`` (baresip's call_max_calls) so that it answers a second INVITE with 486 ("Max Calls";
  the tests' baresip allows 4 calls and would auto-answer it).
- Agent B is idle: a sipp UAS (tests/peers/sipp.py "answer": 180, then 200 after a fixed 200 ms).
- Each round: a baresip caller (1001) calls the phone, the phone answers (``answer`` on the control socket),
  the call is confirmed, and the bench sends ``{"cmd": "action", "name": "transfer:POOL"}`` on a control
  connection opened beforehand, taking ``time.time()`` right before the write. The figure is the time until
  B's 200 OK to the transferee's INVITE reached Kamailio (its ladder, the same clock). Also: press -> the
  INVITE to B at the proxy, and INVITEs to A after the press (``available`` must send none, ``ordered`` one,
  refused with 486). The caller then hangs up on B, and the next round waits until the phone's watched lines
  show A busy and B idle again.

Rounds alternate the two pools (ordered first in even rounds). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from bench.harness import AppPhone, BenchError, Caller, Jitter, device_alsa_conf, machine, wait
from tests.peers.baresip import Baresip
from tests.peers.kamailio_blf import BlfKamailio
from tests.peers.ladder import SipMessage
from tests.peers.sipp import SippTarget

USERS = {str(n): f"pw{n}" for n in range(1000, 1010)}
PHONE, CALLER, AGENT_A, AGENT_B, A_PARTNER = "1000", "1001", "1003", "1004", "1005"
STRATEGIES = ("ordered", "available")

BODY = f"""\
[transfer]
final_timeout = 10.0
[transfer.targets.a]
uri = "{AGENT_A}"
label = "Agent A (busy)"
[transfer.targets.b]
uri = "{AGENT_B}"
label = "Agent B (idle)"
[transfer.pools.ordered]
targets = ["a", "b"]
strategy = "ordered"
[transfer.pools.available]
targets = ["a", "b"]
strategy = "available"
"""


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


@dataclass
class Round:
    strategy: str
    index: int  # -1, -2...: warm-up rounds, not in the figures
    call_id: str  # the caller's call with the phone
    pressed: float  # time.time() right before the action was written to the control socket
    b_ok: float | None = None  # B's 200 OK to the transferee's INVITE, at the proxy
    b_invite: float | None = None  # the transferee's INVITE to B, at the proxy
    invites_to_a: int = 0  # INVITEs to A (not its busy call) from the press to the end of the round
    a_replies: list[str] = field(default_factory=list)  # A's final replies to them
    refers: list[float] = field(default_factory=list)  # the phone's REFERs in the call, at the proxy
    notifies: list[str] = field(default_factory=list)  # the sipfrags of the NOTIFYs in the call, in order
    lines_at_press: dict[str, str] = field(default_factory=dict)
    lines_wait_s: float = 0.0  # how long the round waited for A busy and B idle in the phone's status
    result: Any = None  # the control socket's reply to the action

    @property
    def to_ok_ms(self) -> float | None:
        return None if self.b_ok is None else (self.b_ok - self.pressed) * 1000.0

    @property
    def to_invite_ms(self) -> float | None:
        return None if self.b_invite is None else (self.b_invite - self.pressed) * 1000.0

    def record(self) -> dict[str, Any]:
        ms = [None if t is None else round((t - self.pressed) * 1000.0, 3) for t in self.refers]
        return {**asdict(self), "to_ok_ms": self.to_ok_ms, "to_invite_ms": self.to_invite_ms, "refers_ms": ms}


class PoolBench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.pbx = BlfKamailio(work / "kamailio", USERS)
        self.env = {"PYTHONUNBUFFERED": "1", "STATE_DIRECTORY": str(work / "phone")}
        if not args.host_alsa:
            self.env["ALSA_CONFIG_PATH"] = str(device_alsa_conf(work))
        self.phone: AppPhone | None = None
        self.peers: list[Any] = []
        self.busy_call: str = ""
        self.rounds: list[Round] = []

    # -- lifecycle --

    def __enter__(self) -> Self:
        try:
            self.pbx.start()
            self.phone = AppPhone(self.work / "phone", self.pbx, PHONE, USERS[PHONE], BODY, self.env, name="phone")
            self.phone.start()
            self.phone.connect()
            wait(self.phone.registered, 15, "the phone to register")
            # One call at a time: while in its call, A refuses another with 486 Max Calls.
            self.a = self._peer(Baresip(self.work / "agent-a", AGENT_A, USERS[AGENT_A], self.pbx,
                                        answermode="auto", max_calls=1))
            self.b = self._peer(SippTarget(self.work / "agent-b", AGENT_B, USERS[AGENT_B], self.pbx, "answer"))
            self.partner = self._peer(Baresip(self.work / "a-partner", A_PARTNER, USERS[A_PARTNER], self.pbx))
            self.ua = self._peer(Baresip(self.work / "caller", CALLER, USERS[CALLER], self.pbx))
            self.caller = Caller(self.ua, self.pbx)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _peer(self, peer: Any) -> Any:
        self.peers.append(peer)
        peer.start()
        return peer

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.phone is not None:
            self.phone.stop()
        for peer in reversed(self.peers):
            try:
                peer.stop()
            except Exception as e:  # every peer gets its stop()
                say(f"stopping {type(peer).__name__}: {e}")
        self.pbx.stop()

    # -- the phone's view --

    def lines(self) -> dict[str, str]:
        assert self.phone is not None
        lines = self.phone.request({"cmd": "status"}).get("lines", {})
        return {uri.split("@")[0].removeprefix("sip:"): state for uri, state in lines.items()}

    def calls(self) -> list[dict[str, Any]]:
        assert self.phone is not None
        return list(self.phone.request({"cmd": "status"})["calls"])

    def make_a_busy(self) -> None:
        wait(lambda: self.lines() == {AGENT_A: "idle", AGENT_B: "idle"}, 15, "both agents idle in the phone's lines",
             interval=0.05)
        self.partner.dial(self.pbx.uri(AGENT_A))
        self.a.wait_event("CALL_ESTABLISHED", 10)
        established = self.partner.wait_event("CALL_ESTABLISHED", 10)
        self.busy_call = str(established["id"])
        wait(lambda: self.lines().get(AGENT_A) == "busy", 15, "A busy in the phone's lines", interval=0.05)
        say(f"agent A ({AGENT_A}) busy with {A_PARTNER} (Call-ID {self.busy_call[:16]}...), B ({AGENT_B}) idle")

    def check_a_refuses(self) -> None:
        """A's second call must be refused with 486, not ring: one direct call from the caller first."""
        since = time.time()
        self.caller._forget_events()
        self.ua.dial(self.pbx.uri(AGENT_A))
        closed = self.ua.wait_event("CALL_CLOSED", 10)
        final = self.pbx.wait_for(lambda m: m.kind == "reply" and m.method == "INVITE" and m.source == self.a.source
                                  and m.call_id != self.busy_call and (m.status or 0) >= 300, 5, since=since)
        if final.status != 486:
            raise BenchError(f"agent A answered a second call with {final.label}, not 486 ({closed.get('param')})")
        say(f"agent A refuses a second call: {final.label}")
        wait(lambda: self.lines() == {AGENT_A: "busy", AGENT_B: "idle"}, 15, "A busy and B idle again",
             interval=0.05)

    # -- one round --

    def one_round(self, strategy: str, index: int) -> Round:
        assert self.phone is not None
        started = time.monotonic()
        wait(lambda: self.lines() == {AGENT_A: "busy", AGENT_B: "idle"} and not self.calls(), 15,
             "A busy, B idle and the phone idle", interval=0.02)
        lines_wait = time.monotonic() - started
        call_id = self.caller.ring(self.phone, timeout=10)
        self.phone.request({"cmd": "answer"})
        self.caller.established(call_id, 10)
        wait(lambda: any(c["sip_call_id"] == call_id and c["state"] == "active" for c in self.calls()), 10,
             "the phone's call to be confirmed", interval=0.01)
        time.sleep(random.uniform(*self.args.settle))  # a person takes a moment before pressing transfer
        lines = self.lines()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(self.phone.socket_path))
            line = json.dumps({"cmd": "action", "name": f"transfer:{strategy}"}).encode() + b"\n"
            pressed = time.time()
            sock.sendall(line)
            r = Round(strategy, index, call_id, pressed, lines_at_press=lines, lines_wait_s=lines_wait)
            try:
                ok = self.pbx.wait_for(lambda m: m.kind == "reply" and m.method == "INVITE" and m.status == 200
                                       and m.source == self.b.source, self.args.timeout, since=pressed)
            except Exception as e:
                raise BenchError(f"{strategy} round {index}: no 200 OK from B within {self.args.timeout} s ({e}); "
                                 f"see {self.phone.workdir / 'phone.log'}") from None
            sock.settimeout(self.args.timeout)
            r.result = json.loads(sock.makefile("rb").readline())
        r.b_ok = ok.time
        wait(lambda: not self.calls(), 10, "the phone to leave the call after the transfer", interval=0.02)
        self.ua.hangup(ok.call_id)  # the caller, now with B, hangs up
        self.ua.wait_event("CALL_CLOSED", 10, where=lambda e: e.get("id") == ok.call_id)
        self._read_ladder(r, ok)
        self.rounds.append(r)
        if not r.result.get("ok"):
            raise BenchError(f"{strategy} round {index}: the transfer action failed: {r.result}")
        return r

    def _read_ladder(self, r: Round, ok: SipMessage) -> None:
        ladder = self.pbx.ladder(since=r.pressed)
        to_a = {m.call_id for m in ladder if m.is_request and m.method == "INVITE" and m.to_user == AGENT_A
                and m.call_id != self.busy_call}
        r.invites_to_a = len(to_a)
        r.a_replies = [m.label for m in ladder if m.kind == "reply" and m.method == "INVITE" and m.call_id in to_a
                       and (m.status or 0) >= 200]
        r.refers = [m.time for m in ladder if m.call_id == r.call_id and m.is_request and m.method == "REFER"]
        r.notifies = [m.body_first_line or "" for m in ladder if m.call_id == r.call_id and m.is_request
                      and m.method == "NOTIFY"]
        invite_b = [m.time for m in ladder if m.call_id == ok.call_id and m.is_request and m.method == "INVITE"
                    and m.to_user == AGENT_B]
        r.b_invite = min(invite_b) if invite_b else None

    def run(self) -> None:
        self.make_a_busy()
        self.check_a_refuses()
        for w in range(self.args.warmup):
            for strategy in STRATEGIES:
                self.one_round(strategy, -(w + 1))
        say(f"{self.args.rounds} rounds per strategy, interleaved (after {self.args.warmup} warm-up round(s) each)")
        for i in range(self.args.rounds):
            for strategy in STRATEGIES if i % 2 == 0 else tuple(reversed(STRATEGIES)):
                r = self.one_round(strategy, i)
                if self.args.verbose:
                    say(f"  {strategy:9} round {i:2}: press -> B's 200 {r.to_ok_ms:8.1f} ms, "
                        f"INVITEs to A {r.invites_to_a} {r.a_replies}")
            if (i + 1) % 5 == 0:
                say(f"  {i + 1}/{self.args.rounds}")


# --- figures -------------------------------------------------------------------------------------------------


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else float("nan")


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": statistics.median(values), "p90": nearest_rank(values, 90), "max": max(values),
            "min": min(values)}


def figures(rounds: list[Round]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for strategy in STRATEGIES:
        mine = [r for r in rounds if r.strategy == strategy and r.index >= 0]
        out[strategy] = {
            "press_to_b_200_ms": summary([r.to_ok_ms for r in mine if r.to_ok_ms is not None]),
            "press_to_b_invite_ms": summary([r.to_invite_ms for r in mine if r.to_invite_ms is not None]),
            "press_to_first_refer_ms": summary([(r.refers[0] - r.pressed) * 1000 for r in mine if r.refers]),
            "invites_to_a": {str(k): sum(1 for r in mine if r.invites_to_a == k)
                             for k in sorted({r.invites_to_a for r in mine})},
            "a_replies": sorted({x for r in mine for x in r.a_replies}),
            "refers_per_round": sorted({len(r.refers) for r in mine}),
            "lines_at_press_not_a_busy_b_idle": sum(1 for r in mine
                                                    if r.lines_at_press != {AGENT_A: "busy", AGENT_B: "idle"}),
        }
    o, a = out["ordered"]["press_to_b_200_ms"], out["available"]["press_to_b_200_ms"]
    if o.get("n") and a.get("n"):
        out["ratio_ordered_over_available"] = {k: o[k] / a[k] for k in ("p50", "p90", "max")}
        out["saved_p50_ms"] = o["p50"] - a["p50"]
    o, a = out["ordered"]["press_to_b_invite_ms"], out["available"]["press_to_b_invite_ms"]
    if o.get("n") and a.get("n"):  # without B's own answer time (sipp's fixed 200 ms), the same in both
        out["ratio_ordered_over_available_to_b_invite"] = {k: o[k] / a[k] for k in ("p50", "p90", "max")}
    return out


def report(results: dict[str, Any]) -> str:
    m, f, s = results["machine"], results["figures"], results["settings"]
    lines = [f"pool transfer, first agent busy: {s['rounds']} rounds per strategy, interleaved "
             f"({s['warmup']} warm-up round(s) each not counted); {m['date']}, {m['nproc']} CPUs, load average "
             f"{m['loadavg_start'][0]:.2f} at the start, {m['loadavg_end'][0]:.2f} at the end",
             "",
             "| press `transfer:POOL` → (ms, at the proxy) | p50 | p90 | max | min |",
             "|---|---|---|---|---|"]
    for strategy in STRATEGIES:
        for key, what in (("press_to_b_200_ms", "B's 200 OK"), ("press_to_b_invite_ms", "the INVITE to B"),
                          ("press_to_first_refer_ms", "the first REFER")):
            v = f[strategy][key]
            if v.get("n"):
                lines.append(f"| `{strategy}`: {what} (n={v['n']}) | {v['p50']:.1f} | {v['p90']:.1f} | "
                             f"{v['max']:.1f} | {v['min']:.1f} |")
    ratio = f.get("ratio_ordered_over_available")
    if ratio:
        lines += ["", f"ordered / available, press → B's 200 OK: p50 {ratio['p50']:.2f}×, p90 {ratio['p90']:.2f}×, "
                      f"max {ratio['max']:.2f}× (p50 {f['saved_p50_ms']:.1f} ms saved)"]
    ratio = f.get("ratio_ordered_over_available_to_b_invite")
    if ratio:
        lines += ["ordered / available, press → the INVITE to B (without B's answer time): "
                  f"p50 {ratio['p50']:.2f}×, p90 {ratio['p90']:.2f}×, max {ratio['max']:.2f}×"]
    lines.append("")
    for strategy in STRATEGIES:
        g = f[strategy]
        counts = ", ".join(f"{k} in {v} round(s)" for k, v in g["invites_to_a"].items())
        lines.append(f"{strategy}: INVITEs to A after the press: {counts}; A's answers {g['a_replies'] or 'none'}; "
                     f"REFERs per round {g['refers_per_round']}; rounds whose lines at the press were not "
                     f"A busy / B idle: {g['lines_at_press_not_a_busy_b_idle']}")
    j = results.get("jitter")
    if j:
        lines.append(f"machine: a thread sleeping 5 ms woke late by p50 {j['p50']:.2f}, p99 {j['p99']:.2f}, "
                     f"max {j['max']:.2f} ms (n={j['n']})")
    return "\n".join(lines)


def verdict(results: dict[str, Any]) -> list[str]:
    """What makes the run not measure what it claims: the wrong number of INVITEs to A, or A not refusing."""
    bad = []
    f = results["figures"]
    if set(f["available"]["invites_to_a"]) - {"0"}:
        bad.append(f"available sent INVITEs to the busy agent: {f['available']['invites_to_a']}")
    if set(f["ordered"]["invites_to_a"]) != {"1"}:
        bad.append(f"ordered did not send exactly one INVITE to A every round: {f['ordered']['invites_to_a']}")
    if any(not x.startswith("486") for x in f["ordered"]["a_replies"]):
        bad.append(f"A answered other than 486: {f['ordered']['a_replies']}")
    return bad


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench pool", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20, help="rounds per strategy (default 20)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up rounds per strategy, not counted (default 1)")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for B's 200 OK after a press")
    p.add_argument("--json", type=Path, help="write the figures and every round here")
    p.add_argument("--keep", action="store_true", help="keep the work folder (every process's log)")
    p.add_argument("--host-alsa", action="store_true", help="give the phone this machine's ALSA configuration")
    p.add_argument("-v", "--verbose", action="store_true", help="print every round")
    args = p.parse_args(argv)
    args.settle = (0.2, 0.4)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    work = Path(tempfile.mkdtemp(prefix="firmware-app-pool-"))
    say(f"work folder {work}")
    results: dict[str, Any] = {"machine": machine(),
                               "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    started = time.monotonic()
    try:
        with PoolBench(args, work) as bench:
            jitter = Jitter()
            try:
                bench.run()
            finally:
                late = jitter.stop()
                results["rounds"] = [r.record() for r in bench.rounds]
            results["jitter"] = {"n": len(late), "p50": statistics.median(late), "p99": nearest_rank(late, 99),
                                 "max": max(late)}
    except BaseException:
        if "rounds" in results and args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str))
        say(f"failed; work folder kept: {work}")
        raise
    else:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["seconds"] = time.monotonic() - started
    results["figures"] = figures(bench.rounds)
    results["verdict"] = verdict(results)
    print()
    print(report(results))
    print()
    print("checks: " + ("A busy throughout, 486 from A, no INVITE to A from `available`, one from `ordered`"
                        if not results["verdict"] else "**failed**: " + "; ".join(results["verdict"])))
    if args.keep:
        print(f"work folder kept: {work}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
        say(f"figures and rounds in {args.json}")
    return 1 if results["verdict"] else 0


if __name__ == "__main__":
    sys.exit(main())
