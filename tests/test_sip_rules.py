"""The engine's rules on SIP text that decide who rings the phone and where it may be transferred."""

from __future__ import annotations

import pytest

from firmware_app import config as cfg
from firmware_app.engine import SipEngine, request_uri_user
from tests.test_config import write


def invite(ruri: str) -> str:
    return f"INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n\r\n"


@pytest.mark.parametrize(
    ("ruri", "user"),
    [
        ("sip:1000@pbx.example", "1000"),
        ("SIP:1000@pbx.example:5070;transport=udp", "1000"),  # schemes are case-insensitive
        ("sips:Alice@pbx.example", "Alice"),  # user parts are not
        ("sip:1000:secret@pbx.example", "1000"),  # a (deprecated) password is not part of the user
        ("sip:pbx.example:5070", ""),  # no user part: names nobody
        ("tel:+15550001000;phone-context=example", "+15550001000"),
        ("urn:service:sos", ""),
    ],
)
def test_the_request_uri_names_its_user(ruri, user):
    assert request_uri_user(invite(ruri)) == user


def test_a_request_line_that_is_not_one_names_nobody():
    assert request_uri_user("garbage\r\n\r\n") == ""


def engine(tmp_path, security: str = "") -> SipEngine:
    text = '[account]\nregistrar = "127.0.0.1:5090"\nuser = "1000"\n' + security
    return SipEngine(cfg.load(write(tmp_path, text)), post=lambda event: None)


@pytest.mark.parametrize(
    ("uri", "allowed"),
    [
        ("sip:1003@127.0.0.1:5090", True),
        ("sip:1003@127.0.0.1", True),  # Linphone writes no port: the same host is the same PBX
        ("sip:1003@127.0.0.1:5091", False),  # another port on that host is another server
        ("SIP:1003@127.0.0.1:5090;transport=udp", True),
        ("sip:1003@evil.example", False),
        ("tel:+15550001003", False),
    ],
)
def test_a_refer_may_send_the_phone_to_its_own_domain_only(tmp_path, uri, allowed):
    assert engine(tmp_path).may_transfer_to(uri) is allowed


def test_transfer_domains_widen_where_a_refer_may_send_the_phone(tmp_path):
    e = engine(tmp_path, '[security]\ntransfer_domains = ["pbx.example", "127.0.0.2:5060"]\n')
    assert e.may_transfer_to("sip:1003@PBX.example:5070")  # a domain without a port allows any port
    assert e.may_transfer_to("sip:1003@127.0.0.2:5060")
    assert not e.may_transfer_to("sip:1003@127.0.0.2:5070")
    assert not e.may_transfer_to("sip:1003@127.0.0.1:5090")  # the list replaces the account's domain
