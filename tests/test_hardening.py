"""Hostile input never rings, crashes or unregisters the phone; only trusted parties steer it.

A raw UDP sender on 127.0.0.2 plays the SIP scanner; the registrar (Kamailio) is on 127.0.0.1, so by
default only 127.0.0.1 may ring the phone. After each hostile case the phone is still registered and
answers a legitimate call.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pytest

from tests.phone_process import FIRMWARE_APP, wait

SCANNER = "127.0.0.2"


def phone_port(phone) -> int:
    return int(phone.source.rsplit(":", 1)[1])


def sip_request(
    method: str, port: int, *, user: str = "1000", body: str = "", extra: str = "", ruri: str = ""
) -> bytes:
    branch = "z9hG4bK" + uuid.uuid4().hex[:16]
    lines = [
        f"{method} {ruri or f'sip:{user}@127.0.0.1:{port}'} SIP/2.0",
        f"Via: SIP/2.0/UDP {SCANNER}:5099;branch={branch};rport",
        "Max-Forwards: 70",
        f"From: \"scanner\" <sip:100@{SCANNER}>;tag={uuid.uuid4().hex[:8]}",
        f"To: <sip:{user}@127.0.0.1>",
        f"Call-ID: {uuid.uuid4().hex}@{SCANNER}",
        f"CSeq: 1 {method}",
        f"Contact: <sip:100@{SCANNER}:5099>",
        "User-Agent: friendly-scanner",
    ]
    if extra:
        lines.append(extra)
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


class Scanner:
    """Sends datagrams from 127.0.0.2 and collects whatever comes back."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((SCANNER, 5099))
        self.sock.settimeout(0.3)

    def send(self, data: bytes, port: int) -> list[str]:
        self.sock.sendto(data, ("127.0.0.1", port))
        replies = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                replies.append(self.sock.recv(65535).decode(errors="replace").split("\r\n", 1)[0])
            except socket.timeout:
                break
        return replies

    def ping(self, port: int, timeout: float = 5.0) -> None:
        """Send OPTIONS and wait for its answer: the phone handles datagrams in order on one SIP thread, so
        it has then dealt with everything sent before."""
        request = sip_request("OPTIONS", port)
        call_id = re.search(rb"Call-ID: (\S+)", request).group(1)
        self.sock.sendto(request, ("127.0.0.1", port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                reply = self.sock.recv(65535)
            except socket.timeout:
                continue
            if reply.startswith(b"SIP/2.0 ") and re.search(rb"Call-ID: " + re.escape(call_id) + rb"\r\n", reply):
                return
        raise AssertionError(f"the phone did not answer OPTIONS within {timeout} s")

    def drain(self, until: Callable[[list[str]], bool], timeout: float) -> list[str]:
        """First lines of every datagram that comes back, until ``until(replies)`` or ``timeout`` s."""
        replies: list[str] = []
        deadline = time.monotonic() + timeout
        while not until(replies) and time.monotonic() < deadline:
            try:
                replies.append(self.sock.recv(65535).decode(errors="replace").split("\r\n", 1)[0])
            except socket.timeout:
                continue
        return replies

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def scanner():
    s = Scanner()
    yield s
    s.close()


def assert_still_serving(phone, baresip_factory, kamailio):
    assert phone.process.poll() is None, "the phone died"
    assert phone.status()["registration"]["state"] == "registered"
    caller = baresip_factory("1001")
    caller.dial(kamailio.uri("1000"))
    phone.wait_state("ringing")
    phone.cli("press", "main", "single")
    caller.wait_event("CALL_ESTABLISHED")
    caller.hangup()
    phone.wait_state("idle")


def assert_serves_its_first_call(phone, baresip_factory, kamailio):
    """assert_still_serving(), and that call from 1001 was the first thing to reach the plugins.

    The phone deals with what it receives in order (one SIP thread, one phone thread, one event stream), so
    once the events of a call that came later are in, so are any an earlier hostile message caused.
    """
    assert_still_serving(phone, baresip_factory, kamailio)
    phone.wait_event(lambda e: e["event"] == "state" and e["state"] == "idle")
    callers = {e["remote_uri"].split("@")[0] for e in phone.events if e["event"] == "call"}
    assert callers == {"sip:1001"}, phone.events
    states = [e["state"] for e in phone.events if e["event"] == "state"]
    assert states == ["ringing", "in_call", "idle"], phone.events
    assert not [e for e in phone.events if e["event"] in ("transfer", "transfer_request", "call_waiting")]


def test_untrusted_invites_never_ring(phone_factory, scanner, baresip_factory, kamailio):
    phone = phone_factory().start()
    port = phone_port(phone)
    assert scanner.send(sip_request("INVITE", port, body=SDP), port)[-1].startswith("SIP/2.0 403")
    assert scanner.send(sip_request("INVITE", port), port)[-1].startswith("SIP/2.0 403")  # no SDP: no abort
    assert scanner.send(sip_request("INVITE", port, user="admin", body=SDP), port)[-1].startswith("SIP/2.0 403")
    scanner.send(sip_request("OPTIONS", port), port)
    wait(
        lambda: re.search(r"refused \d+ INVITEs? from untrusted sources \(last from 127\.0\.0\.2:5099\)", phone.log()),
        5,
        "the refusals summed up in the log",
        phone,
    )
    assert_serves_its_first_call(phone, baresip_factory, kamailio)  # no refused INVITE reached the plugins


def test_a_burst_of_untrusted_invites_costs_no_call_slot_or_media(phone_factory, scanner, baresip_factory, kamailio):
    # About 30 INVITEs at 70/s used to exhaust PJSIP's ioqueue with RTP sockets and abort the phone; the
    # screen answers them before PJSUA sets up anything. The bench measures the rates (python -m bench flood).
    phone = phone_factory().start()
    port = phone_port(phone)
    for _ in range(BURST):
        scanner.sock.sendto(sip_request("INVITE", port, body=SDP), ("127.0.0.1", port))
    answers = scanner.drain(until=lambda replies: len(replies) >= BURST, timeout=10)
    assert answers and {a.split(" ", 2)[1] for a in answers} == {"403"}, answers[:5]
    assert phone.process.poll() is None, "the phone died"
    assert_serves_its_first_call(phone, baresip_factory, kamailio)


#: INVITEs of one burst: ten times what used to abort the phone.
BURST = 300


def trusted_invite(port: int, *, until: tuple[str, ...] = ("SIP/2.0 4", "SIP/2.0 2"), **kw) -> list[str]:
    """Send an INVITE from 127.0.0.1 (a trusted source: the registrar's address); its answers up to ``until``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    try:
        request = sip_request("INVITE", port, body=SDP, **kw).replace(SCANNER.encode(), b"127.0.0.1")
        request = request.replace(b"127.0.0.1:5099", f"127.0.0.1:{sock.getsockname()[1]}".encode())
        sock.sendto(request, ("127.0.0.1", port))
        replies: list[str] = []
        while not any(r.startswith(until) for r in replies):
            replies.append(sock.recv(65535).decode().split("\r\n", 1)[0])
        return replies
    finally:
        sock.close()


@pytest.mark.parametrize(
    "ruri",
    [
        "sip:9999@127.0.0.1:{port}",  # another user
        "SIP:9999@127.0.0.1:{port}",  # the scheme in capitals
        "sip:127.0.0.1:{port}",  # no user part at all
        "sips:1000x@127.0.0.1:{port}",
        "tel:+15550001000",  # a number that is not the phone's
    ],
)
def test_only_the_phones_own_user_rings(phone_factory, kamailio, ruri):
    phone = phone_factory().start()
    port = phone_port(phone)
    replies = trusted_invite(port, ruri=ruri.format(port=port))
    assert replies[-1].startswith("SIP/2.0 404"), replies
    assert not [e for e in phone.events if e["event"] == "call"]
    assert phone.status()["state"] == "idle"


def test_an_alias_rings_the_phone(phone_factory, kamailio, baresip_factory):
    phone = phone_factory(account='aliases = ["reception", "+15550001000"]\n').start()
    port = phone_port(phone)
    for ruri in (f"SIP:reception@127.0.0.1:{port}", "tel:+15550001000"):
        replies = trusted_invite(port, ruri=ruri, until=("SIP/2.0 180", "SIP/2.0 4"))
        assert replies[-1].startswith("SIP/2.0 180"), (ruri, replies)
        phone.wait_state("ringing")
        phone.cli("reject")
        phone.wait_state("idle")
    assert_still_serving(phone, baresip_factory, kamailio)


MALFORMED = {
    "garbage": lambda port: os.urandom(700),
    "bad request line": lambda port: b"INVITE\r\n\r\n",
    "wrong Content-Length": lambda port: sip_request("INVITE", port, body=SDP).replace(
        f"Content-Length: {len(SDP)}".encode(), b"Content-Length: 9999"
    ),
    "negative Content-Length": lambda port: sip_request("OPTIONS", port).replace(b"Content-Length: 0", b"Content-Length: -5"),
    "duplicate Call-ID and CSeq": lambda port: sip_request(
        "INVITE", port, body=SDP, extra="Call-ID: second@x\r\nCSeq: 7 BYE"
    ),
    "unknown method": lambda port: sip_request("FROBNICATE", port),
    "huge header": lambda port: sip_request("INVITE", port, body=SDP, extra="X-Pad: " + "A" * 60000),
    "broken Via": lambda port: sip_request("INVITE", port, body=SDP).replace(b"Via: SIP/2.0/UDP", b"Via: SIP/9.9/XYZ"),
    "no headers at all": lambda port: b"SIP/2.0 200 OK\r\n\r\n",
    "NUL bytes": lambda port: sip_request("INVITE", port, body=SDP).replace(b"Max-Forwards", b"Max\x00Forwards"),
    "stray response": lambda port: b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.2;branch=z9hG4bKx\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
}


def test_malformed_sip_never_crashes_or_creates_a_call(phone_factory, scanner, baresip_factory, kamailio):
    phone = phone_factory().start()
    port = phone_port(phone)
    for name, make in MALFORMED.items():
        try:
            scanner.send(make(port), port)
        except OSError as e:  # a datagram larger than loopback's MTU is refused by the kernel, not the phone
            assert "huge" in name, (name, e)
        assert phone.process.poll() is None, f"the phone died on {name}"
    assert_serves_its_first_call(phone, baresip_factory, kamailio)


def answered_call(phone, baresip_factory, kamailio):
    """baresip 1001 calls the phone through Kamailio and the phone answers: (the caller, the SIP Call-ID)."""
    caller = baresip_factory("1001")
    caller.dial(kamailio.uri("1000"))
    phone.wait_state("ringing")
    phone.cli("answer")
    caller.wait_event("CALL_ESTABLISHED")
    return caller, phone.status()["calls"][0]["sip_call_id"]


def test_refer_to_a_forbidden_target_is_refused(phone_factory, baresip_factory, kamailio):
    phone = phone_factory().start()
    caller, call_id = answered_call(phone, baresip_factory, kamailio)
    caller.transfer("sip:premium@evil.example")
    kamailio.wait_for(lambda m: m.call_id == call_id and m.method == "REFER" and m.status == 403)
    event = phone.wait_event(lambda e: e["event"] == "transfer_request")
    assert event["accepted"] is False and event["uri"] == "sip:premium@evil.example"
    # baresip ends its call when its REFER is refused: the phone's 200 to that BYE shows it has dealt with
    # everything before it on that dialog (one SIP thread), the REFER included
    kamailio.wait_for(lambda m: m.call_id == call_id and m.method == "BYE" and m.status == 200
                      and m.source == phone.source)
    assert not [m for m in kamailio.ladder() if m.is_request and m.method == "INVITE" and m.source == phone.source]
    assert not [m for m in kamailio.ladder() if m.call_id == call_id and m.is_request and m.method == "BYE"
                and m.source == phone.source]  # and it never ended the call itself


@pytest.mark.parametrize("trusted", [SCANNER, "127.0.0.2/31"])
def test_trusted_sources_replace_the_registrars_address(phone_factory, scanner, baresip_factory, kamailio, trusted):
    # security.trusted_sources is the whole list of who may ring the phone: the registrar is no longer implied
    phone = phone_factory(extra=f'[security]\ntrusted_sources = ["{trusted}"]\n').start()
    caller = baresip_factory("1001")
    caller.dial(kamailio.uri("1000"))
    kamailio.wait_for(lambda m: m.source == phone.source and m.method == "INVITE" and m.status == 403)
    caller.wait_event("CALL_CLOSED")
    port = phone_port(phone)
    assert "SIP/2.0 180 Ringing" in scanner.send(sip_request("INVITE", port, body=SDP), port)
    phone.wait_state("ringing")
    [call] = phone.status()["calls"]
    assert call["remote_uri"] == f"sip:100@{SCANNER}"
    # that call came after the refused one: had the refused one reached the plugins, its event would be in
    phone.wait_event(lambda e: e["event"] == "call" and e["id"] == call["id"])
    assert {e["remote_uri"] for e in phone.events if e["event"] == "call"} == {f"sip:100@{SCANNER}"}
    phone.cli("reject")
    phone.wait_state("idle")


@pytest.mark.parametrize("where", ["the listed server", "the account's own domain"])
def test_transfer_domains_decide_where_a_refer_may_send_the_phone(phone_factory, baresip_factory,
                                                                   sipp_target_factory, kamailio, where):
    target = sipp_target_factory("1003", "answer")
    # another server on the PBX's host: the account's domain (127.0.0.1 with Kamailio's port) does not cover it
    phone = phone_factory(extra=f'[security]\ntransfer_domains = ["{target.source}"]\n').start()
    allowed = where == "the listed server"
    uri = f"sip:1003@{target.source}" if allowed else kamailio.uri("1003")  # the list replaces the domain
    caller, call_id = answered_call(phone, baresip_factory, kamailio)
    caller.transfer(uri)
    event = phone.wait_event(lambda e: e["event"] == "transfer_request")
    assert (event["uri"], event["accepted"]) == (uri, allowed)
    p = phone.source
    if allowed:
        kamailio.wait_for(lambda m: m.call_id == call_id and m.method == "REFER" and m.status == 202 and m.source == p)
        invite = kamailio.wait_for(lambda m: m.is_request and m.method == "INVITE" and m.source == p)
        assert (invite.ruri or "").startswith(uri), invite.ruri
        kamailio.wait_for(lambda m: m.call_id == invite.call_id and m.method == "INVITE" and m.status == 200
                          and m.source == target.source)
        assert target.calls_received == 1
    else:
        kamailio.wait_for(lambda m: m.call_id == call_id and m.method == "REFER" and m.status == 403 and m.source == p)
        # baresip ends its call when its REFER is refused: the phone's 200 to that BYE shows it has dealt
        # with the REFER (one SIP thread); a call it made for it would be on the ladder by then
        kamailio.wait_for(lambda m: m.call_id == call_id and m.method == "BYE" and m.status == 200 and m.source == p)
        assert not [m for m in kamailio.ladder() if m.is_request and m.method == "INVITE" and m.source == p]
        assert target.calls_received == 0


def test_secrets_readable_by_others_refuse_to_start(phone_factory):
    phone = phone_factory()
    (phone.workdir / "secrets.toml").chmod(0o644)
    result = subprocess.run([*FIRMWARE_APP, "-c", str(phone.config), "run"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"firmware-app: {phone.workdir / 'secrets.toml'}: readable by others (mode 0644); chmod 0640 or 0600 it"
    )


def test_the_password_never_reaches_logs_status_or_events(phone_factory, baresip_factory, kamailio):
    password = "pw1000"
    phone = phone_factory(extra="").start()
    phone.config.write_text(phone.config.read_text().replace('level = "debug"', 'level = "debug"\nsip_trace = true'))
    phone.stop()
    phone.start()
    caller = baresip_factory("1001")
    caller.dial(kamailio.uri("1000"))
    phone.wait_state("ringing")
    phone.cli("answer")
    caller.wait_event("CALL_ESTABLISHED")
    status = phone.cli("status").stdout
    phone.stop()
    log = phone.log()
    assert "REGISTER sip:" in log  # the SIP trace really was on
    for text in (log, status, repr(phone.events)):
        assert password not in text


def as_nobody(*caps: str, groups: tuple[int, ...] = ()) -> list[str]:
    """A command line prefix that runs a program as nobody, in ``groups``, keeping the capabilities ``caps``."""
    nobody = pwd.getpwnam("nobody")
    argv = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}"]
    argv.append(f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups")
    if caps:
        kept = ",".join(f"+{cap}" for cap in caps)
        argv += [f"--inh-caps={kept}", f"--ambient-caps={kept}"]
    return argv


# Asks for the status and prints the reply line; with "then" also whether the phone then closed the connection.
STATUS_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"cmd": "status"}\\n')
except OSError:
    pass  # a refused client may find the connection closed before it asks
reply = s.makefile("rb").readline()
print(reply.decode(), end="")
if sys.argv[2:] == ["then"]:
    s.settimeout(2)
    try:
        print("open" if s.recv(1) else "closed")
    except ConnectionResetError:  # closed with the request unread
        print("closed")
    except TimeoutError:
        print("open")
"""


def status_as(phone, prefix: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, "/usr/bin/python3", "-c", STATUS_CLIENT, str(phone.socket), *args],
                          capture_output=True, text=True, timeout=30)


def test_control_socket_refuses_other_users(phone_factory):
    phone = phone_factory().start()
    assert oct(phone.socket.stat().st_mode & 0o777) == "0o660"
    # CAP_DAC_READ_SEARCH takes nobody through the directories above the socket (/run/firmware-app is 0750 on
    # the device; here a private tmp dir), not through the socket's own mode: connecting needs write permission
    result = status_as(phone, as_nobody("dac_read_search"))
    assert result.returncode != 0 and "PermissionError" in result.stderr, result.stderr


def test_control_socket_checks_the_peers_credentials(phone_factory):
    phone = phone_factory().start()
    # CAP_DAC_OVERRIDE gets nobody past every file mode: only the phone's SO_PEERCRED check stands in its way
    refused = status_as(phone, as_nobody("dac_override"), "then")
    assert refused.returncode == 0, refused.stderr
    assert refused.stdout.splitlines() == ['{"ok": false, "error": "permission denied"}', "closed"]
    # a member of the service's group may (its supplementary groups are read from /proc)
    member = status_as(phone, as_nobody("dac_read_search", groups=(phone.socket.stat().st_gid,)))
    assert member.returncode == 0, member.stderr
    reply = json.loads(member.stdout.splitlines()[0])
    assert reply["ok"] is True and reply["result"]["registration"]["state"] == "registered"
    # and the phone keeps serving
    assert phone.process.poll() is None
    assert phone.status()["registration"]["state"] == "registered"


def make_pki(tmp_path, host_san: str):
    """A CA and a server certificate for ``host_san`` (e.g. DNS:wrong.example or IP:127.0.0.1)."""

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=Test CA")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=pbx")
    (tmp_path / "ext.cnf").write_text(f"subjectAltName={host_san}\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return tmp_path / "ca.pem"


def tls_server(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    out = (tmp_path / "s_server.out").open("wb")
    proc = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", "server.pem", "-key", "server.key",
         "-quiet", "-tls1_2"],
        cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.PIPE,  # EOF on stdin ends it
    )
    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return False
        return True

    wait(listening, 5, "openssl s_server")
    return proc, port


@pytest.mark.parametrize("san, verified", [("DNS:wrong.example", False), ("IP:127.0.0.1", True)])
def test_tls_verifies_the_registrar_certificate(tmp_path, phone_factory, kamailio, san, verified):
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = make_pki(pki, san)
    server, port = tls_server(pki)
    try:
        phone = phone_factory()
        phone.config.write_text(
            phone.config.read_text()
            .replace(f'registrar = "{kamailio.domain}"', f'registrar = "127.0.0.1:{port}"\ntransport = "tls"')
            + f'\n[security]\ntls_ca_file = "{ca}"\n'
        )
        phone.start(registered=False)
        if verified:
            # the handshake succeeded: s_server prints what the phone sent over TLS
            wait(lambda: b"REGISTER sip:127.0.0.1" in (pki / "s_server.out").read_bytes(), 10, "a REGISTER over TLS")
        else:
            phone.wait_registration("failed")
            assert b"REGISTER" not in (pki / "s_server.out").read_bytes()
            assert "registration failed" in phone.log()
    finally:
        server.kill()
        server.wait()


def mwi_notify(port: int, source: str, source_port: int) -> bytes:
    body = "Messages-Waiting: yes\r\nMessage-Account: sip:*97@127.0.0.1\r\nVoice-Message: 2/8 (0/2)\r\n"
    return (
        f"NOTIFY sip:1000@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {source}:{source_port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:voicemail@{source}>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:1000@127.0.0.1>\r\nCall-ID: {uuid.uuid4().hex}\r\nCSeq: 1 NOTIFY\r\n"
        f"Contact: <sip:voicemail@{source}:{source_port}>\r\nEvent: message-summary\r\n"
        f"Subscription-State: active\r\nContent-Type: application/simple-message-summary\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def test_message_waiting_from_the_pbx_is_reported_and_from_others_ignored(phone_factory, scanner):
    phone = phone_factory().start()
    port = phone_port(phone)
    scanner.send(mwi_notify(port, SCANNER, 5099), port)
    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pbx.bind(("127.0.0.1", 0))
    try:
        pbx.sendto(mwi_notify(port, "127.0.0.1", pbx.getsockname()[1]), ("127.0.0.1", port))
        event = phone.wait_event(lambda e: e["event"] == "message_waiting")
    finally:
        pbx.close()
    assert (event["waiting"], event["new"], event["old"]) == (True, 2, 8)
    assert [e for e in phone.events if e["event"] == "message_waiting"] == [event]  # the scanner's was ignored
    assert "ignored a message-waiting NOTIFY from untrusted 127.0.0.2" in phone.log()


def test_out_of_dialog_requests_from_strangers_are_not_acted_on(phone_factory, scanner, baresip_factory, kamailio):
    phone = phone_factory().start()
    port = phone_port(phone)
    subscribe = sip_request("SUBSCRIBE", port, extra="Event: presence\r\nExpires: 600")
    assert not scanner.send(subscribe, port)[-1].startswith("SIP/2.0 2"), "presence is not offered"
    for request in (
        sip_request("REFER", port, extra=f"Refer-To: <sip:900@{SCANNER}>"),
        sip_request("MESSAGE", port, body="hello").replace(b"application/sdp", b"text/plain"),
        sip_request("NOTIFY", port, extra="Event: refer\r\nSubscription-State: active"),
    ):
        scanner.sock.sendto(request, ("127.0.0.1", port))
        scanner.ping(port)  # the phone has dealt with it (PJSIP drops the REFER and the NOTIFY unanswered)
    # an INVITE the phone sent for them would be on the ladder before the phone's 180 to this call
    assert_serves_its_first_call(phone, baresip_factory, kamailio)
    assert not [m for m in kamailio.ladder() if m.is_request and m.method == "INVITE" and m.source == phone.source]


def test_mandatory_srtp_refuses_a_plain_rtp_offer_with_488(phone_factory, baresip_factory, kamailio):
    phone = phone_factory(extra='[security]\nsrtp = "mandatory"\n').start()
    caller = baresip_factory("1001")  # offers plain RTP/AVP
    caller.dial(kamailio.uri("1000"))
    kamailio.wait_for(lambda m: m.source == phone.source and m.method == "INVITE" and m.status == 488)
    caller.wait_event("CALL_CLOSED")
    assert not [e for e in phone.events if e["event"] == "state" and e["state"] == "ringing"]
