"""The Mosquitto rig against the real broker: TLS, passwords, per-phone ACLs, retained messages, wills, restarts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.fleet.conftest import OPERATOR, PHONES
from tests.fleet.mosquitto import Mosquitto, PeerError, Watcher, Will
from tests.peers.support import require_binary

PREFIX = "firmware-app"
A, B = "phone-a", "phone-b"


def _sub_once(*args: str) -> subprocess.CompletedProcess[str]:
    """mosquitto_sub that gives up after 3 s (status 27) if it connected and nothing came."""
    return subprocess.run([require_binary("mosquitto_sub"), *args, "-t", f"{PREFIX}/#", "-C", "1", "-W", "3"],
                          capture_output=True, text=True, timeout=10, check=False)


def _watch(broker: Mosquitto, user: str, topic: str = "#", **kwargs: object) -> Watcher:
    password = OPERATOR[1] if user == OPERATOR[0] else PHONES[user]
    return Watcher(broker, user, password, topic, **kwargs)  # type: ignore[arg-type]


def _pub(broker: Mosquitto, user: str, topic: str, payload: str, retain: bool = False) -> None:
    password = OPERATOR[1] if user == OPERATOR[0] else PHONES[user]
    broker.publish(user, password, topic, payload, retain)


def test_tls_with_the_brokers_ca_connects_and_a_client_trusting_another_ca_refuses_the_broker(
        mosquitto: Mosquitto) -> None:
    with _watch(mosquitto, A, f"{PREFIX}/{A}/#") as watcher:
        assert watcher.subscriptions == 1
    # The server certificate names localhost too (DNS SAN), for a phone configured with a host name.
    by_name = _sub_once(*mosquitto.client_args(A, PHONES[A]), "-h", "localhost", "-E")
    assert by_name.returncode == 0, by_name.stderr

    refused = _sub_once(*mosquitto.client_args(A, PHONES[A], cafile=mosquitto.wrong_ca_file))
    assert refused.returncode != 0
    assert "TLS error" in refused.stderr
    with pytest.raises(PeerError, match="exited"):
        Watcher(mosquitto, A, PHONES[A], cafile=mosquitto.wrong_ca_file)
    assert f"u'{A}'" in mosquitto.log()  # it is the same user that connected with the right CA


def test_a_wrong_password_or_an_unknown_user_is_refused(mosquitto: Mosquitto) -> None:
    for user, password in ((A, "pw-b"), ("phone-z", "pw-z"), (A, None)):
        refused = _sub_once(*mosquitto.client_args(user, password))
        assert refused.returncode != 0, (user, password)
        assert "not authorised" in refused.stderr, refused.stderr
    with pytest.raises(PeerError, match="not authorised"):
        Watcher(mosquitto, B, "pw-a")


def test_each_phone_is_confined_to_its_own_subtree_and_the_operator_writes_only_commands(
        mosquitto: Mosquitto) -> None:
    with _watch(mosquitto, OPERATOR[0]) as everything, _watch(mosquitto, A) as phone_a:
        # phone-a may not write phone-b's tree: the broker drops it silently (MQTT 3.1.1 QoS 1 still gets PUBACK 0).
        _pub(mosquitto, A, f"{PREFIX}/{B}/state", "forged by a")
        _pub(mosquitto, B, f"{PREFIX}/{A}/cmd/doctor", '{"id":"x1"}')  # nor may phone-b command phone-a
        _pub(mosquitto, OPERATOR[0], f"{PREFIX}/{A}/state", "forged by the operator")  # the operator only commands
        _pub(mosquitto, B, f"{PREFIX}/{B}/state", "idle")  # phone-b's own tree: the operator sees it, phone-a not
        _pub(mosquitto, A, f"{PREFIX}/{A}/state", "registered")  # the witness, published last
        _pub(mosquitto, OPERATOR[0], f"{PREFIX}/{A}/cmd/doctor", '{"id":"c1"}')

        phone_a.wait_topic(f"{PREFIX}/{A}/cmd/doctor", '{"id":"c1"}')
        everything.wait_topic(f"{PREFIX}/{A}/cmd/doctor", '{"id":"c1"}')
        assert [(m["topic"], m["payload"]) for m in everything.messages()] == [
            (f"{PREFIX}/{B}/state", "idle"),
            (f"{PREFIX}/{A}/state", "registered"),
            (f"{PREFIX}/{A}/cmd/doctor", '{"id":"c1"}'),
        ]
        # Subscribed to "#", phone-a reads only its own subtree (the SUBACK granted it: filtering is per message).
        assert [(m["topic"], m["payload"]) for m in phone_a.messages()] == [
            (f"{PREFIX}/{A}/state", "registered"),
            (f"{PREFIX}/{A}/cmd/doctor", '{"id":"c1"}'),
        ]
    assert mosquitto.log().count("Denied PUBLISH") == 3


def test_payloads_arrive_as_text_with_the_retain_flag(mosquitto: Mosquitto) -> None:
    payload = '{"schema": 1, "text": "line 1\\nline \\"2\\"", "é": true}\nsecond line'
    with _watch(mosquitto, OPERATOR[0]) as live:
        _pub(mosquitto, A, f"{PREFIX}/{A}/online", "online", retain=True)
        _pub(mosquitto, A, f"{PREFIX}/{A}/event", payload)
        _pub(mosquitto, A, f"{PREFIX}/{A}/empty", "")
        live.wait_topic(f"{PREFIX}/{A}/empty")
        # A subscriber that was there when it was published gets retain 0, as MQTT 3.1.1 says.
        assert live.messages() == [
            {"topic": f"{PREFIX}/{A}/online", "payload": "online", "retain": False, "qos": 0},
            {"topic": f"{PREFIX}/{A}/event", "payload": payload, "retain": False, "qos": 0},
            {"topic": f"{PREFIX}/{A}/empty", "payload": "", "retain": False, "qos": 0},
        ]
    with _watch(mosquitto, OPERATOR[0], f"{PREFIX}/+/online") as late:
        message = late.wait_topic(f"{PREFIX}/{A}/online")
    assert message == {"topic": f"{PREFIX}/{A}/online", "payload": "online", "retain": True, "qos": 0}


def test_a_killed_client_gets_its_will_published_and_a_clean_disconnect_does_not(mosquitto: Mosquitto) -> None:
    online = f"{PREFIX}/{A}/online"
    with _watch(mosquitto, OPERATOR[0], f"{PREFIX}/+/online") as operator:
        phone = _watch(mosquitto, A, f"{PREFIX}/{A}/cmd/#", will=Will(online, "offline"))
        _pub(mosquitto, A, online, "online", retain=True)
        operator.wait_topic(online, "online")
        phone.kill()
        will = operator.wait_topic(online, "offline")
        assert will["retain"] is False  # live delivery; the broker keeps it retained for later subscribers

        polite = _watch(mosquitto, B, f"{PREFIX}/{B}/cmd/#", will=Will(f"{PREFIX}/{B}/online", "offline"))
        assert polite.stop() == 0  # SIGTERM: mosquitto_sub sends DISCONNECT, and the broker discards the will
        _pub(mosquitto, B, f"{PREFIX}/{B}/online", "witness")
        operator.wait_topic(f"{PREFIX}/{B}/online", "witness")
        assert [m["payload"] for m in operator.messages() if m["topic"] == f"{PREFIX}/{B}/online"] == ["witness"]
    with _watch(mosquitto, OPERATOR[0], online) as late:
        assert late.wait_topic(online)["payload"] == "offline"
        assert late.messages()[0]["retain"] is True


def test_restart_and_kill_keep_the_port_and_subscribers_reconnect(mosquitto: Mosquitto) -> None:
    port = mosquitto.port
    _pub(mosquitto, A, f"{PREFIX}/{A}/online", "online", retain=True)
    with _watch(mosquitto, OPERATOR[0]) as operator:
        operator.wait_topic(f"{PREFIX}/{A}/online", "online")
        mosquitto.restart()
        assert mosquitto.port == port
        operator.wait_subscribed(2, timeout=10)  # mosquitto_sub comes back by itself, about a second later
        _pub(mosquitto, A, f"{PREFIX}/{A}/state", "after restart")
        operator.wait_topic(f"{PREFIX}/{A}/state", "after restart")
        # persistence false: the retained message did not survive the restart.
        assert [m["topic"] for m in operator.messages()] == [f"{PREFIX}/{A}/online", f"{PREFIX}/{A}/state"]

    # Killed, the broker sends no TLS close_notify: OpenSSL 3 calls that an error, and mosquitto_sub gives up
    # (status 7) where it reconnected after the clean stop. A phone's client must reconnect from both.
    mosquitto.kill()
    assert not mosquitto.running()
    mosquitto.start()
    assert mosquitto.port == port
    with _watch(mosquitto, OPERATOR[0]) as operator:
        _pub(mosquitto, A, f"{PREFIX}/{A}/state", "after kill")
        operator.wait_topic(f"{PREFIX}/{A}/state", "after kill")
    assert mosquitto.log().count(f"Opening ipv4 listen socket on port {port}.") == 3


def test_client_certificates_identify_phones_when_the_broker_requires_them(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto", require_certificate=True, use_identity_as_username=True)
    broker.add_user(OPERATOR[0], OPERATOR[1])  # passwords are not even read in this mode
    with broker:
        cert_a = broker.client_cert(A)
        with Watcher(broker, None, None, cert=broker.client_cert(OPERATOR[0])) as operator:
            # The CN is the user name: phone-a's certificate confines it to phone-a's subtree, password or not.
            broker.publish(None, None, f"{PREFIX}/{B}/state", "forged", cert=cert_a)
            broker.publish(B, PHONES[B], f"{PREFIX}/{A}/state", "registered", cert=cert_a)
            operator.wait_topic(f"{PREFIX}/{A}/state", "registered")
            assert operator.topics() == [f"{PREFIX}/{A}/state"]
        no_cert = _sub_once(*broker.client_args(A, PHONES[A]))
        assert no_cert.returncode != 0
    assert "peer did not return a certificate" in broker.log()
