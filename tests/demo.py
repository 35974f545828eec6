"""The demo: a caller rings the phone, a button press answers, a double press blind-transfers.

Everything runs on 127.0.0.1 with no PBX to configure: a Kamailio registrar/proxy, baresip as the caller
(extension 1001), sipp as the front desk (1003), and the phone itself (1000) as the real ``firmware-app
run`` process. At the end the SIP ladder, as the proxy saw it, is printed as a sequence diagram.

    tests/setup.sh && .venv/bin/python -m tests.demo
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from tests.peers.baresip import Baresip
from tests.peers.fixtures import PASSWORDS
from tests.peers.kamailio import Kamailio, format_ladder
from tests.peers.sipp import SippTarget
from tests.phone_process import PhoneProcess

CONFIG = """
[transfer]
default = "desk"

[transfer.targets.desk]
uri = "1003"
label = "Front desk"
"""


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="firmware-app-demo-") as tmp:
        work = Path(tmp)
        with Kamailio(work / "kamailio", PASSWORDS) as pbx:
            say(f"Kamailio registrar/proxy on {pbx.domain}")
            phone = PhoneProcess(work / "phone", pbx, extra=CONFIG)
            caller = Baresip(work / "caller", "1001", PASSWORDS["1001"], pbx)
            desk = SippTarget(work / "desk", "1003", PASSWORDS["1003"], pbx, "answer")
            try:
                started = time.monotonic()
                phone.start()
                say(f"phone 1000 registered in {time.monotonic() - started:.2f} s")
                caller.start()
                desk.start()
                say("caller 1001 and front desk 1003 registered; 1001 calls the phone")
                caller.dial(pbx.uri("1000"))
                phone.wait_state("ringing")
                say("the phone rings; pressing the headset button once ...")
                say(f"  button -> {phone.cli('press', 'main', 'single').stdout.strip()}")
                caller.wait_event("CALL_ESTABLISHED")
                phone.wait_state("in_call")
                say("in call with 1001; double press ...")
                say(f"  button -> {phone.cli('press', 'main', 'double').stdout.strip()} (to the front desk)")
                phone.wait_state("idle")
                for event in phone.events:
                    if event["event"] == "transfer":
                        detail = f" {event['code']} {event['reason']}" if event["code"] else ""
                        say(f"  transfer {event['state']}{detail}")
                say(f"the caller is with the front desk (sipp took {desk.calls_received} call); stopping the phone")
                code = phone.stop()
                say(f"phone exited with {code} after un-REGISTER")
            finally:
                phone.stop()
                caller.stop()
                desk.stop()
            names = {caller.source: "caller 1001", desk.source: "desk 1003", desk.sources[1]: "desk 1003"}
            try:
                names[phone.source] = "phone 1000"
            except AssertionError:
                pass
            print()
            print(format_ladder(pbx.ladder(), names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
