"""The core phone against real peers on loopback: Kamailio as registrar/proxy, baresip as the far party.

Every assertion about SIP is made on the ladder Kamailio logged, not on the phone's own log.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.phone_process import wait


def replies_from(kamailio, source, method, status, since=0.0):
    return [
        m
        for m in kamailio.ladder()
        if m.kind == "reply" and m.source == source and m.method == method and m.status == status and m.time >= since
    ]


def requests_from(kamailio, source, method, since=0.0):
    return [m for m in kamailio.ladder() if m.is_request and m.source == source and m.method == method and m.time >= since]


def ring(phone, caller):
    caller.dial(phone.kamailio.uri(phone.user))
    phone.wait_state("ringing")


def test_registers_with_digest_auth(phone_factory, kamailio):
    phone = phone_factory().start()
    ladder = [m for m in kamailio.ladder() if m.method == "REGISTER" and m.from_user == "1000"]
    labels = [m.label for m in ladder[:4]]
    assert labels == ["REGISTER", "401 Unauthorized", "REGISTER", "200 OK"], labels
    assert kamailio.registered("1000")
    status = phone.status()
    assert status["registration"]["state"] == "registered"
    assert status["engine"]["alive"] is True


def test_wrong_password_is_a_clear_error_with_bounded_retries(phone_factory, kamailio):
    phone = phone_factory(password="not-the-password").start(registered=False)
    phone.wait_registration("failed")
    # Each attempt is a REGISTER and its challenged re-send; retry_interval = 1 and retry_max = 4 put the
    # third attempt (the 5th REGISTER) at least 1 + 2 s after the first, where a tight loop sends it at once.
    def three_attempts():
        registers = requests_from(kamailio, phone.source, "REGISTER")
        return registers if len(registers) >= 5 else None

    registers = wait(three_attempts, 10, "a third registration attempt", phone)
    assert registers[4].time - registers[0].time >= 3 - 0.05, [round(m.time - registers[0].time, 3) for m in registers]
    log = phone.log()
    assert re.search(r"registration failed: (401|403) .*check the account's user and password", log)
    assert "not-the-password" not in log
    assert phone.status()["registration"]["state"] in ("failed", "registering")


def test_incoming_call_answered_by_press(phone_factory, baresip_factory, kamailio):
    phone = phone_factory().start()
    caller = baresip_factory("1001")
    ring(phone, caller)
    assert replies_from(kamailio, phone.source, "INVITE", 180)
    assert phone.cli("press", "main", "single").stdout.strip() == "answer"
    kamailio.wait_for(lambda m: m.source == phone.source and m.method == "INVITE" and m.status == 200)
    caller.wait_event("CALL_ESTABLISHED")
    phone.wait_state("in_call")
    call = phone.status()["calls"][0]
    assert call["direction"] == "incoming" and call["state"] == "active"
    assert call["remote_uri"].startswith("sip:1001@")


def test_incoming_call_rejected_with_486(phone_factory, baresip_factory, kamailio):
    phone = phone_factory().start()
    caller = baresip_factory("1001")
    ring(phone, caller)
    assert phone.cli("press", "main", "long").stdout.strip() == "reject"
    kamailio.wait_for(lambda m: m.source == phone.source and m.method == "INVITE" and m.status == 486)
    caller.wait_event("CALL_CLOSED")
    phone.wait_state("idle")


def test_reject_code_is_configurable(phone_factory, baresip_factory, kamailio):
    phone = phone_factory(account="reject_code = 603\n").start()
    caller = baresip_factory("1001")
    ring(phone, caller)
    phone.cli("reject")  # account.reject_code
    kamailio.wait_for(lambda m: m.source == phone.source and m.method == "INVITE" and m.status == 603)
    phone.wait_state("idle")
    ring(phone, caller)
    phone.cli("reject", "--code", "480")  # the command's own code wins
    kamailio.wait_for(lambda m: m.source == phone.source and m.method == "INVITE" and m.status == 480)


def test_remote_party_ends_the_call(phone_factory, baresip_factory, kamailio):
    phone = phone_factory().start()
    caller = baresip_factory("1001")
    ring(phone, caller)
    phone.cli("answer")
    caller.wait_event("CALL_ESTABLISHED")
    phone.wait_state("in_call")
    caller.hangup()
    phone.wait_state("idle")
    assert requests_from(kamailio, caller.source, "BYE")
    assert replies_from(kamailio, phone.source, "BYE", 200)
    ended = phone.wait_event(lambda e: e["event"] == "call" and e["state"] == "ended")
    assert ended["status_code"] == 200


def test_phone_ends_the_call_with_a_press(phone_factory, baresip_factory, kamailio):
    phone = phone_factory().start()
    caller = baresip_factory("1001")
    ring(phone, caller)
    phone.cli("press", "main", "single")
    phone.wait_state("in_call")
    assert phone.cli("press", "main", "single").stdout.strip() == "hangup"
    kamailio.wait_for(lambda m: m.source == phone.source and m.method == "BYE" and m.is_request)
    caller.wait_event("CALL_CLOSED")
    phone.wait_state("idle")


def test_outgoing_call_to_an_extension(phone_factory, baresip_factory, kamailio):
    phone = phone_factory().start()
    callee = baresip_factory("1001")
    phone.cli("call", "1001")
    invite = kamailio.wait_for(lambda m: m.source == phone.source and m.method == "INVITE" and m.is_request)
    assert invite.ruri.startswith("sip:1001@")
    callee.wait_event("CALL_INCOMING")
    callee.accept()
    phone.wait_state("in_call")
    assert phone.status()["calls"][0]["direction"] == "outgoing"
    phone.cli("hangup")
    phone.wait_state("idle")


def test_second_incoming_call_is_refused_busy_and_the_first_goes_on(phone_factory, baresip_factory, kamailio):
    phone = phone_factory(extra="[calls]\ncall_waiting = false\n").start()
    first, second = baresip_factory("1001"), baresip_factory("1002")
    ring(phone, first)
    phone.cli("answer")
    first.wait_event("CALL_ESTABLISHED")
    second.dial(kamailio.uri("1000"))
    kamailio.wait_for(lambda m: m.source == phone.source and m.method == "INVITE" and m.status == 486)
    second.wait_event("CALL_CLOSED")
    status = phone.status()
    assert status["state"] == "in_call"
    assert [c["remote_uri"].split("@")[0] for c in status["calls"]] == ["sip:1001"]
    assert not [e for e in first.events if e.get("type") == "CALL_CLOSED"]


def test_a_plugin_that_raises_does_not_stop_a_call_being_answered(phone_factory, baresip_factory, kamailio):
    phone = phone_factory(extra='[plugins]\nmodules = ["tests.plugins.raising"]\n').start()
    caller = baresip_factory("1001")
    ring(phone, caller)
    assert phone.cli("press", "main", "single").stdout.strip() == "answer"
    caller.wait_event("CALL_ESTABLISHED")
    log = phone.log()
    assert "plugin tests.plugins.raising failed in softphone_incoming_call" in log
    assert "plugin tests.plugins.raising failed in softphone_map_input" in log
    assert "PluginBroke" in log  # the traceback is there


def test_sigterm_hangs_up_unregisters_and_exits_0(phone_factory, baresip_factory, kamailio):
    phone = phone_factory().start()
    caller = baresip_factory("1001")
    ring(phone, caller)
    phone.cli("answer")
    caller.wait_event("CALL_ESTABLISHED")
    stopped_at = time.time()
    assert phone.stop() == 0
    assert requests_from(kamailio, phone.source, "BYE", since=stopped_at - 0.1)
    unregister = [
        m for m in requests_from(kamailio, phone.source, "REGISTER", since=stopped_at - 0.1) if m.expires == 0
    ]
    assert unregister, "no un-REGISTER seen at the proxy"
    assert [
        m
        for m in kamailio.ladder()
        if m.kind == "local-reply" and m.method == "REGISTER" and m.status == 200 and m.time >= unregister[-1].time
    ]
    assert not kamailio.registered("1000")
    assert "Traceback" not in phone.log().partition("INFO firmware_app: stopping")[2]


def test_no_module_outside_the_engine_imports_pjsua2():
    root = Path(__file__).resolve().parent.parent
    offenders = [
        str(p.relative_to(root))
        for folder in ("firmware_app", "plugins")
        for p in (root / folder).rglob("*.py")
        if re.search(r"^\s*(import pjsua2|from pjsua2)", p.read_text(), re.M) and p.name != "engine.py"
    ]
    assert offenders == []


#: Runs the CLI in a Python where ``import pjsua2`` fails, as on a laptop or a build host without it.
WITHOUT_PJSUA2 = "import sys; sys.modules['pjsua2'] = None; from firmware_app.cli import main; sys.exit(main(sys.argv[1:]))"


def test_the_cli_checks_a_config_and_runs_doctor_without_pjsua2(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[account]\nregistrar = "pbx.example"\nuser = "1000"\n')
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('password = "pw"\n')
    secrets.chmod(0o600)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", WITHOUT_PJSUA2, *args], capture_output=True, text=True, timeout=60)

    checked = cli("check-config", str(config))
    assert checked.returncode == 0, checked.stderr
    doctor = cli("-c", str(config), "doctor")
    assert "PJSUA2 is not installed" in doctor.stdout + doctor.stderr, doctor.stdout + doctor.stderr
    assert "Traceback" not in doctor.stderr
    status = cli("--socket", str(tmp_path / "none.sock"), "status")
    assert status.returncode == 3 and "Traceback" not in status.stderr, status.stderr
