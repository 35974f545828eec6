"""The phone on a real Mosquitto (TLS, ACL per device): its state, calls and call quality, its last will,
allowlisted commands with results, and the broker going away without the calls noticing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.fleet.conftest import SIP_USERS
from tests.fleet.mosquitto import Mosquitto, Watcher
from tests.phone_process import wait

PREFIX = "firmware-app/phone-a"
REPO = Path(__file__).resolve().parents[2]


def telemetry(mosquitto: Mosquitto, extra: str = "") -> str:
    return (f'[telemetry]\nbroker = "{mosquitto.host}:{mosquitto.port}"\nca_file = "{mosquitto.ca_file}"\n'
            f'device = "phone-a"\nusername = "phone-a"\nretry_first_s = 0.2\nretry_max_s = 1.0\n{extra}')


def payload(message) -> dict:
    return json.loads(message["payload"])


def start_phone(phone_factory, mosquitto: Mosquitto, extra: str = ""):
    return phone_factory(extra=telemetry(mosquitto, extra), secrets='mqtt_password = "pw-a"\n').start()


def operator(mosquitto: Mosquitto) -> Watcher:
    watcher = Watcher(mosquitto, "operator", "pw-op", "firmware-app/#")
    watcher.wait_subscribed()
    return watcher


def test_the_phone_says_it_is_online_and_its_calls_and_their_quality(phone_factory, mosquitto, baresip_factory,
                                                                    kamailio):
    fleet = operator(mosquitto)
    phone = start_phone(phone_factory, mosquitto)
    fleet.wait(lambda m: m["topic"] == f"{PREFIX}/online" and payload(m)["online"], timeout=10)
    fleet.wait(lambda m: m["topic"] == f"{PREFIX}/state" and payload(m)["registration"] == "registered")

    caller = baresip_factory("1001")
    caller.dial(kamailio.uri("1000"))
    phone.wait_state("ringing")
    phone.cli("action", "answer")
    caller.wait_event("CALL_ESTABLISHED")
    time.sleep(3)  # some audio
    caller.hangup()
    quality = payload(fleet.wait(lambda m: m["topic"] == f"{PREFIX}/event/quality", timeout=10))
    assert quality["schema"] == 1 and quality["device"] == "phone-a"
    assert quality["rx_packets"] > 100 and 1.0 <= quality["mos"] <= 4.5
    fleet.wait(lambda m: m["topic"] == f"{PREFIX}/event/call" and payload(m)["state"] == "ended", timeout=10)
    states = [payload(m)["state"] for m in fleet.messages() if m["topic"] == f"{PREFIX}/event/call"]
    assert states[0] == "ringing" and "active" in states and states[-1] == "ended"

    late = Watcher(mosquitto, "operator", "pw-op", f"{PREFIX}/online")  # a dashboard that starts later
    assert payload(late.wait(lambda m: m["retain"], timeout=5))["online"] is True
    late.stop()


def test_the_last_will_says_offline_when_the_phone_vanishes(phone_factory, mosquitto, fleet_kamailio):
    fleet = operator(mosquitto)
    # Registered on the fleet tests' own registrar: the stale registration a killed phone leaves stays there.
    phone = phone_factory(proxy=fleet_kamailio, user="phone-a", password=SIP_USERS["phone-a"],
                          extra=telemetry(mosquitto), secrets='mqtt_password = "pw-a"\n').start()
    fleet.wait(lambda m: m["topic"] == f"{PREFIX}/online" and payload(m)["online"], timeout=10)
    phone.stop(signal.SIGKILL)
    gone = fleet.wait(lambda m: m["topic"] == f"{PREFIX}/online" and not payload(m)["online"], timeout=100)
    assert payload(gone)["device"] == "phone-a"


def test_allowlisted_commands_run_and_others_are_refused_with_a_result(phone_factory, mosquitto):
    fleet = operator(mosquitto)
    start_phone(phone_factory, mosquitto, 'commands = ["dnd"]\n')
    fleet.wait(lambda m: m["topic"] == f"{PREFIX}/online", timeout=10)

    def command(body: str, *, topic: str = f"{PREFIX}/cmd") -> None:
        mosquitto.publish("operator", "pw-op", topic, body)

    def result(command_id: str) -> dict:
        return payload(fleet.wait(lambda m: m["topic"] == f"{PREFIX}/result/{command_id}", timeout=10))

    command(json.dumps({"id": "c1", "command": "dnd", "argument": "on"}))
    first = result("c1")
    assert first["ok"] is True and first["result"]["on"] is True
    command(json.dumps({"id": "c2", "command": "doctor"}))
    assert "not allowed" in result("c2")["error"]
    command(json.dumps({"id": "c3", "command": "reboot-everything"}))
    assert "unknown command" in result("c3")["error"]
    command("{not json")
    command(json.dumps({"id": "c4", "command": "dnd", "pad": "x" * 5000}))  # over 4 kB: refused unread

    def invalid() -> list[str]:
        return [payload(m)["error"] for m in fleet.messages() if m["topic"] == f"{PREFIX}/result/invalid"]

    wait(lambda: len(invalid()) == 2, 10, "two invalid commands answered")
    assert "not JSON" in invalid()[0] and "longer than 4096 bytes" in invalid()[1]
    command(json.dumps({"id": "c5", "command": "dnd", "argument": "off"}), topic="firmware-app/phone-b/cmd")
    command(json.dumps({"id": "c6", "command": "dnd", "argument": "off"}))  # the witness: after c5
    assert result("c6")["ok"] is True
    assert not [m for m in fleet.messages() if m["topic"].endswith("/result/c5")]  # another device's: not run


def test_the_broker_away_during_a_call_leaves_the_call_alone_and_messages_come_after(
    phone_factory, mosquitto, baresip_factory, kamailio
):
    fleet = operator(mosquitto)
    phone = start_phone(phone_factory, mosquitto)
    fleet.wait(lambda m: m["topic"] == f"{PREFIX}/online", timeout=10)
    caller = baresip_factory("1001")
    caller.dial(kamailio.uri("1000"))
    phone.wait_state("ringing")
    fleet.stop()
    mosquitto.stop()
    phone.cli("action", "answer")  # the call goes on without the broker
    caller.wait_event("CALL_ESTABLISHED")
    phone.wait_state("in_call")
    phone.cli("action", "dnd")  # and so do the phone's commands
    caller.hangup()
    phone.wait_state("idle")
    mosquitto.start()
    back = operator(mosquitto)
    # What happened while the broker was away arrives once it is back: the call's answer and end.
    back.wait(lambda m: m["topic"] == f"{PREFIX}/event/call" and payload(m)["state"] == "ended", timeout=20)
    states = [payload(m)["state"] for m in back.messages() if m["topic"] == f"{PREFIX}/event/call"]
    assert "active" in states  # answered while the broker was away, kept in the outbox, delivered now


#: What Home Assistant's MQTT discovery needs of each entity (its schema's required keys for these kinds).
REQUIRED = {"sensor": {"state_topic"}, "binary_sensor": {"state_topic"}, "button": {"command_topic"}}
COMMON = {"name", "unique_id", "device", "availability_topic"}


def test_home_assistant_discovery_describes_the_phone(phone_factory, mosquitto, baresip_factory, kamailio):
    fleet = Watcher(mosquitto, "operator", "pw-op", "homeassistant/#")
    start_phone(phone_factory, mosquitto, 'home_assistant = true\ncommands = ["test_call"]\ntest_call = "1001"\n')
    fleet.wait(lambda m: m["topic"].endswith("/test_call/config"), timeout=10)
    configs = {m["topic"]: payload(m) for m in fleet.messages()}
    kinds = sorted(topic.split("/")[1] + ":" + topic.split("/")[3] for topic in configs)
    assert kinds == ["binary_sensor:headset", "button:test_call", "sensor:last_call_mos", "sensor:registration",
                     "sensor:state"]
    for topic, config in configs.items():
        component = topic.split("/")[1]
        assert COMMON | REQUIRED[component] <= set(config), (topic, config)
        assert config["device"]["identifiers"] == ["firmware-app-phone-a"]
        assert topic.split("/")[2] == "phone-a"  # the ACL lets a phone write only its own discovery topics
    assert json.loads(configs["homeassistant/button/phone-a/test_call/config"]["payload_press"])["command"] == "test_call"


def test_a_remote_test_call_reports_its_quality(phone_factory, mosquitto, baresip_factory, kamailio):
    fleet = operator(mosquitto)
    start_phone(phone_factory, mosquitto, 'commands = ["test_call"]\ntest_call = "1001"\ntest_call_s = 2\n')
    fleet.wait(lambda m: m["topic"] == f"{PREFIX}/online", timeout=10)
    baresip_factory("1001", answermode="auto")  # the number the test calls (an echo service on a real PBX)
    mosquitto.publish("operator", "pw-op", f"{PREFIX}/cmd", json.dumps({"id": "t1", "command": "test_call"}))
    result = payload(fleet.wait(lambda m: m["topic"] == f"{PREFIX}/result/t1", timeout=30))
    assert result["ok"] is True, result
    quality = result["result"]["quality"]
    assert quality["rx_packets"] > 50 and 1.0 <= quality["mos"] <= 4.5


def test_a_phone_that_stops_cleanly_says_it_is_offline(phone_factory, mosquitto):
    fleet = operator(mosquitto)
    phone = start_phone(phone_factory, mosquitto)
    fleet.wait(lambda m: m["topic"] == f"{PREFIX}/online" and payload(m)["online"], timeout=10)
    assert phone.stop() == 0  # SIGTERM, as systemctl stop: a clean disconnect, which cancels the will
    fleet.wait(lambda m: m["topic"] == f"{PREFIX}/online" and not payload(m)["online"], timeout=10)
    late = Watcher(mosquitto, "operator", "pw-op", f"{PREFIX}/online")
    assert payload(late.wait(lambda m: m["retain"], timeout=5))["online"] is False


def test_a_remote_restart_answers_then_the_phone_exits_for_the_service_to_start_it(phone_factory, mosquitto):
    fleet = operator(mosquitto)
    phone = start_phone(phone_factory, mosquitto, 'commands = ["restart"]\n')
    fleet.wait(lambda m: m["topic"] == f"{PREFIX}/online" and payload(m)["online"], timeout=10)

    mosquitto.publish("operator", "pw-op", f"{PREFIX}/cmd", json.dumps({"id": "r1", "command": "restart"}))

    answer = payload(fleet.wait(lambda m: m["topic"] == f"{PREFIX}/result/r1", timeout=10))
    assert answer["ok"] is True and answer["result"] == {"restarting": True}
    assert phone.process.wait(timeout=20) == 75  # firmware-app.service: RestartForceExitStatus=75
    fleet.wait(lambda m: m["topic"] == f"{PREFIX}/online" and not payload(m)["online"], timeout=10)
    assert "restarting: remote command restart" in phone.log()


def test_a_remote_provisioning_request_touches_the_file_the_path_unit_watches(phone_factory, mosquitto, tmp_path):
    fleet = operator(mosquitto)
    runtime = tmp_path / "run"
    runtime.mkdir()
    phone_factory(extra=telemetry(mosquitto, 'commands = ["reload_provisioning"]\n'),
                  secrets='mqtt_password = "pw-a"\n', env={"RUNTIME_DIRECTORY": str(runtime)}).start()
    fleet.wait(lambda m: m["topic"] == f"{PREFIX}/online", timeout=10)

    mosquitto.publish("operator", "pw-op", f"{PREFIX}/cmd", json.dumps({"id": "p1", "command": "reload_provisioning"}))

    answer = payload(fleet.wait(lambda m: m["topic"] == f"{PREFIX}/result/p1", timeout=10))
    assert answer["ok"] is True and answer["result"]["requested"] is True
    requested = float((runtime / "provisioning-requested").read_text())
    assert abs(requested - answer["time"]) < 5  # written now, by this command
    unit = (REPO / "systemd/firmware-provision-request.path").read_text()
    assert "PathChanged=/run/firmware-app/provisioning-requested" in unit
    assert "Unit=firmware-provision-network.service" in unit


def test_a_provisioning_request_outside_the_service_is_refused_with_the_reason(phone_factory, mosquitto, monkeypatch):
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    fleet = operator(mosquitto)
    start_phone(phone_factory, mosquitto, 'commands = ["reload_provisioning"]\n')
    fleet.wait(lambda m: m["topic"] == f"{PREFIX}/online", timeout=10)

    mosquitto.publish("operator", "pw-op", f"{PREFIX}/cmd", json.dumps({"id": "p2", "command": "reload_provisioning"}))

    answer = payload(fleet.wait(lambda m: m["topic"] == f"{PREFIX}/result/p2", timeout=10))
    assert answer["ok"] is False and "the phone does not run as the service" in answer["error"]


def test_the_heartbeat_keeps_the_retained_online_time_fresh(phone_factory, mosquitto):
    fleet = operator(mosquitto)
    start_phone(phone_factory, mosquitto, "heartbeat_s = 1\n")

    def beats() -> list[float]:
        return [payload(m)["time"] for m in fleet.messages()
                if m["topic"] == f"{PREFIX}/online" and payload(m)["online"]]

    wait(lambda: len(beats()) >= 3, 15, "three online messages")
    assert beats() == sorted(beats()) and len(set(beats())) == len(beats())


def test_a_remote_doctor_answers_with_what_doctor_finds_on_the_phone(phone_factory, mosquitto):
    fleet = operator(mosquitto)
    phone = start_phone(phone_factory, mosquitto, 'commands = ["doctor"]\n')
    fleet.wait(lambda m: m["topic"] == f"{PREFIX}/online", timeout=10)

    mosquitto.publish("operator", "pw-op", f"{PREFIX}/cmd", json.dumps({"id": "d1", "command": "doctor"}))

    answer = payload(fleet.wait(lambda m: m["topic"] == f"{PREFIX}/result/d1", timeout=30))
    assert answer["ok"] is True, answer
    local = json.loads(subprocess.run([sys.executable, "-m", "firmware_app.cli", "-c", str(phone.config), "doctor", "--json"],
                                      capture_output=True, text=True, env=phone.env, timeout=60).stdout)  # run on the spot
    assert answer["result"]["ok"] is local["ok"]
    assert isinstance(answer["result"]["problems"], list)
    assert sorted(answer["result"]["problems"]) == sorted(local["problems"])
