"""The phone's call table stays PJSUA's under a stream of ordinary calls: no stuck call, no caller declined.

PJSUA reuses its call slots at once. A call object of the phone that outlived its slot used to hang up the
next call in that slot (603 to the caller) and cut that call's end off from the phone, which then stayed
"ringing" and answered every later call 486. Callers here come through Kamailio and give up 0-300 ms after
the phone starts ringing (tests/peers/scenarios/uac_cancel.xml), fast enough for slots to be reused many
times. The soak with thousands of calls and every timing is in the bench (python -m bench soak).
"""

from __future__ import annotations

import subprocess

from tests.peers.sipp import SCENARIOS
from tests.peers.support import LOOPBACK, free_port, require_binary

CALLS = 100  # per caller
RATE = 25  # calls per second, per caller
CALLERS = ("1002", "1004")


def start_caller(kamailio, user: str, workdir) -> subprocess.Popen[str]:
    workdir.mkdir()
    argv = [
        require_binary("sipp"), f"{kamailio.host}:{kamailio.port}", "-sf", str(SCENARIOS / "uac_cancel.xml"),
        "-s", "1000", "-set", "caller", user, "-i", LOOPBACK, "-p", str(free_port(tcp=False)),
        "-mi", LOOPBACK, "-mp", str(free_port(tcp=False)), "-t", "u1",
        "-r", str(RATE), "-m", str(CALLS), "-l", "20", "-nostdin", "-timeout", "60s", "-timeout_error",
        "-trace_err", "-error_file", str(workdir / "errors.log"),
    ]
    return subprocess.Popen(argv, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_calls_given_up_while_ringing_leave_an_idle_phone(phone_factory, kamailio, baresip_factory, tmp_path):
    # PJSUA's level 4 names every call it hangs up itself: "Call N hanging up: code=0" is a slot-reuse decline.
    phone = phone_factory(logging="pjsip_level = 4\n").start()
    callers = {user: start_caller(kamailio, user, tmp_path / f"sipp-{user}") for user in CALLERS}
    for user, process in callers.items():
        process.wait(timeout=90)
        errors = tmp_path / f"sipp-{user}" / "errors.log"
        seen = errors.read_text(errors="replace")[:2500] if errors.exists() else ""
        # sipp exits 0 only when every call ended as its scenario expects: 487 after the CANCEL, or 486.
        assert process.returncode == 0, f"sipp {user} exit {process.returncode}; it saw:\n{seen}"
    phone.wait_state("idle")
    assert phone.status()["calls"] == []
    assert "hanging up: code=0" not in phone.log()
    calls = [e for e in phone.events if e["event"] == "call"]
    ended = {e["id"] for e in calls if e["state"] == "ended"}
    assert {e["id"] for e in calls} == ended, "a call the phone announced never ended"
    # And the next caller is answered.
    caller = baresip_factory("1001")
    caller.dial(kamailio.uri("1000"))
    phone.wait_state("ringing")
    phone.cli("answer")
    caller.wait_event("CALL_ESTABLISHED")
    caller.hangup()
    phone.wait_state("idle")
