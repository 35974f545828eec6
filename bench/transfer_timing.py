"""Blind transfer timing: button event -> REFER on the wire, and REFER -> final NOTIFY, at the proxy.

    .venv/bin/python -m bench.transfer_timing [--transfers 30]

A double press is injected through the control socket (the path a physical button's event takes after the
gesture recognizer); its send time and Kamailio's receive times of the REFER and the final NOTIFY are on the
same clock. The button -> REFER time includes the hold re-INVITE's round trip, which the phone waits for.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.peers.baresip import Baresip
from tests.peers.fixtures import PASSWORDS
from tests.peers.kamailio import Kamailio
from tests.peers.sipp import SippTarget
from tests.phone_process import PhoneProcess

CONFIG = '[transfer]\ndefault = "desk"\n[transfer.targets.desk]\nuri = "1003"\n'


def press(socket_path: Path, gesture: str) -> float:
    """Send a press on the control socket; returns the wall-clock time it was sent."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(socket_path))
        sent = time.time()
        sock.sendall(json.dumps({"cmd": "press", "button": "main", "gesture": gesture}).encode() + b"\n")
        reply = json.loads(sock.makefile("rb").readline())
    if not reply.get("ok"):
        raise RuntimeError(reply)
    return sent


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transfer_timing")
    parser.add_argument("--transfers", type=int, default=30)
    args = parser.parse_args()
    to_refer, to_final = [], []
    with tempfile.TemporaryDirectory(prefix="firmware-app-bench-") as tmp, Kamailio(Path(tmp) / "k", PASSWORDS) as pbx:
        phone = PhoneProcess(Path(tmp) / "phone", pbx, extra=CONFIG)
        caller = Baresip(Path(tmp) / "caller", "1001", PASSWORDS["1001"], pbx)
        desk = SippTarget(Path(tmp) / "desk", "1003", PASSWORDS["1003"], pbx, "answer")
        try:
            phone.start()
            caller.start()
            desk.start()
            for _ in range(args.transfers):
                caller.dial(pbx.uri("1000"))
                phone.wait_state("ringing")
                press(phone.socket, "single")
                caller.wait_event("CALL_ESTABLISHED")
                phone.wait_state("in_call")
                call_id = phone.status()["calls"][0]["sip_call_id"]
                sent = press(phone.socket, "double")
                final = pbx.wait_for(lambda m: m.call_id == call_id and m.body_first_line == "SIP/2.0 200 OK")
                refer = next(m for m in pbx.ladder() if m.call_id == call_id and m.is_request and m.method == "REFER")
                to_refer.append((refer.time - sent) * 1000)
                to_final.append((final.time - refer.time) * 1000)
                phone.wait_state("idle")
                caller.hangup()  # the caller, now with the desk, hangs up before the next round
                time.sleep(0.3)
        finally:
            phone.stop()
            caller.stop()
            desk.stop()

    def summary(values: list[float]) -> str:
        values = sorted(values)
        p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
        return f"p50 {statistics.median(values):6.2f} ms  p99 {p99:6.2f} ms  max {values[-1]:6.2f} ms"

    print(f"{len(to_refer)} blind transfers (Kamailio receive times, 127.0.0.1)")
    print(f"  button event -> REFER at the proxy:   {summary(to_refer)}")
    print(f"  REFER -> final NOTIFY at the proxy:   {summary(to_final)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
