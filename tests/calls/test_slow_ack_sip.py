"""A hang-up between the phone's 200 OK and the caller's ACK: one BYE, after the ACK, and a normal end."""

from __future__ import annotations

import subprocess

from tests.peers.sipp import SCENARIOS
from tests.peers.support import LOOPBACK, free_port, require_binary


def test_a_hang_up_before_the_ack_sends_one_bye_after_it(phone_factory, kamailio, tmp_path):
    phone = phone_factory().start()
    workdir = tmp_path / "sipp"
    workdir.mkdir()
    caller = subprocess.Popen(
        [require_binary("sipp"), f"{kamailio.host}:{kamailio.port}", "-sf", str(SCENARIOS / "uac_slow_ack.xml"),
         "-s", "1000", "-set", "caller", "1007", "-i", LOOPBACK, "-p", str(free_port(tcp=False)), "-mi", LOOPBACK,
         "-mp", str(free_port(tcp=False)), "-t", "u1", "-m", "1", "-nostdin", "-timeout", "20s", "-timeout_error",
         "-trace_err", "-error_file", str(workdir / "errors.log")],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    phone.wait_state("ringing")
    phone.cli("action", "answer")
    phone.cli("action", "hangup")  # well inside the 1.5 s the caller takes to ACK
    caller.wait(timeout=30)
    errors = workdir / "errors.log"
    ladder = "\n".join(f"{m.time:.3f} {m.source} -> {m.destination} {m.label} cseq={m.cseq}" for m in kamailio.ladder())
    assert caller.returncode == 0, (errors.read_text(errors="replace") if errors.exists() else "") + ladder
    byes = [m for m in kamailio.ladder() if m.source == phone.source and m.method == "BYE" and m.is_request]
    assert len(byes) == 1
    ended = phone.wait_event(lambda e: e["event"] == "call" and e["state"] == "ended")
    assert ended["status_code"] == 200  # a normal end, not "603 Decline"
