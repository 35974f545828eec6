"""The phone comes back by itself: registrar restarts, a secondary registrar, calls that outlive a restart.

Each test has its own Kamailio, so stopping it disturbs nobody else. The phone uses TCP where it must notice
a dead registrar quickly: over UDP a REGISTER to a registrar that is gone fails only after RFC 3261's
Timer F (32 s), over TCP the refused connection says so at once.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.peers.baresip import Baresip
from tests.peers.fixtures import PASSWORDS
from tests.peers.kamailio import Kamailio
from tests.phone_process import wait



@pytest.fixture
def own_kamailio(tmp_path):
    proxy = Kamailio(tmp_path / "kamailio", PASSWORDS).start()
    yield proxy
    proxy.stop()


def tune(phone, **account):
    text = phone.config.read_text().replace("retry_interval = 1\n", "")
    for key, value in account.items():
        text = text.replace("[account]\n", f"[account]\n{key} = {value}\n", 1)
    phone.config.write_text(text)


def registrations(proxy, user="1000"):
    return [m for m in proxy.ladder() if m.method == "REGISTER" and m.status == 200 and m.kind == "local-reply"]


@pytest.mark.parametrize("down_for", [10, pytest.param(60, marks=pytest.mark.slow)])
def test_registration_returns_within_one_retry_interval(phone_factory, own_kamailio, down_for):
    phone = phone_factory(proxy=own_kamailio)
    tune(phone, transport='"tcp"', reg_expiry=10, retry_interval=2)
    phone.start()
    own_kamailio.stop()
    phone.wait_registration("failed", timeout=15)  # the next refresh (every ~5 s) finds nobody
    time.sleep(max(0.0, down_for - 5))
    own_kamailio.restart()
    back = time.monotonic()
    wait(lambda: own_kamailio.registered("1000"), 2 + 3, "the phone registered again", phone)
    assert time.monotonic() - back <= 2 + 3  # one retry interval, plus a TCP connect and the digest round trip
    phone.wait_registration("registered")


def test_secondary_registrar_is_used_when_the_primary_is_unreachable(phone_factory, own_kamailio):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]  # bound but not listening: connections are refused
    try:
        phone = phone_factory(proxy=own_kamailio)
        tune(phone, transport='"tcp"', retry_interval=1, secondary_registrar=f'"{own_kamailio.domain}"')
        phone.config.write_text(
            phone.config.read_text().replace(
                f'\nregistrar = "{own_kamailio.domain}"', f'\nregistrar = "127.0.0.1:{dead_port}"'
            )
        )
        phone.start(registered=False)
        phone.wait_registration("registered", timeout=10)
        assert own_kamailio.registered("1000")
        assert "next attempt through " + own_kamailio.domain in phone.log()
    finally:
        dead.close()


def test_a_call_survives_a_registrar_restart(phone_factory, own_kamailio, tmp_path):
    phone = phone_factory(proxy=own_kamailio).start()
    caller = Baresip(tmp_path / "caller", "1001", PASSWORDS["1001"], own_kamailio).start()
    try:
        caller.dial(own_kamailio.uri("1000"))
        phone.wait_state("ringing")
        phone.cli("answer")
        caller.wait_event("CALL_ESTABLISHED")
        source = phone.source  # the ladder starts afresh with the restarted proxy
        own_kamailio.restart(down_for=2)
        assert phone.status()["state"] == "in_call"
        phone.cli("hangup")  # the BYE goes through the restarted proxy (record-routed, stateless for it)
        caller.wait_event("CALL_CLOSED")
        phone.wait_state("idle")
        assert [m for m in own_kamailio.ladder() if m.is_request and m.method == "BYE" and m.source == source]
    finally:
        caller.stop()
