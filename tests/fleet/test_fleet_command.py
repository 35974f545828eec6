"""``firmware-app fleet`` against a real Mosquitto (TLS, per-device ACLs) and real phone processes.

The phones register on a Kamailio of this module's own (users named as their devices: phone-a, phone-b,
phone-01..phone-20): the session Kamailio has ten users, 20 phones would have to share them (two contacts
per user, every call to one forked to both), and a phone killed here would leave a stale contact behind
for later tests. Every wait is for a positive witness (an operator's Watcher seeing the phone's retained
messages, or a result); the fleet command itself gathers for at most --timeout. The 20-phone test takes
about 7 s on two cores, so it stays in the default suite.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.conftest import FLEET, NOT_INSTALLED, OPERATOR, SIP_USERS
from tests.fleet.mosquitto import Mosquitto, Watcher, mosquitto_installed
from tests.peers.baresip import Baresip
from tests.peers.kamailio import Kamailio
from tests.phone_process import PhoneProcess

PREFIX = "firmware-app"
MQTT_PASSWORDS = {"phone-a": "pw-a", "phone-b": "pw-b"}  # tests/fleet/conftest.py's users


def telemetry(mosquitto: Mosquitto, device: str, commands: tuple[str, ...] = (), groups: tuple[str, ...] = ()) -> str:
    return (f'[telemetry]\nbroker = "{mosquitto.host}:{mosquitto.port}"\nca_file = "{mosquitto.ca_file}"\n'
            f'device = "{device}"\nusername = "{device}"\nretry_first_s = 0.2\nretry_max_s = 1.0\n'
            f"commands = {json.dumps(list(commands))}\ngroups = {json.dumps(list(groups))}\n")


def make_phone(phone_factory: Callable[..., PhoneProcess], kamailio: Kamailio, mosquitto: Mosquitto, device: str,
               password: str, commands: tuple[str, ...] = (), groups: tuple[str, ...] = ()) -> PhoneProcess:
    return phone_factory(device, proxy=kamailio, user=device, password=SIP_USERS[device],
                         extra=telemetry(mosquitto, device, commands, groups), secrets=f'mqtt_password = "{password}"\n')


def operator(mosquitto: Mosquitto) -> Watcher:
    return Watcher(mosquitto, *OPERATOR, f"{PREFIX}/#")


def payload(message: dict[str, Any]) -> dict[str, Any]:
    return json.loads(message["payload"])


def wait_registered(watcher: Watcher, device: str, timeout: float = 15.0) -> None:
    """The phone's retained state says registered (what the fleet command will find) and it is online."""
    watcher.wait(lambda m: m["topic"] == f"{PREFIX}/{device}/online" and payload(m)["online"], timeout)
    watcher.wait(lambda m: m["topic"] == f"{PREFIX}/{device}/state" and payload(m)["registration"] == "registered",
                 timeout)


class Fleet:
    """Runs ``firmware-app fleet VERB --broker ... ARGS`` as the operator (the password from a file or $ENV)."""

    def __init__(self, mosquitto: Mosquitto, workdir: Path) -> None:
        self.mosquitto = mosquitto
        self.password_file = workdir / "operator.password"
        self.password_file.write_text(OPERATOR[1] + "\n")
        self.password_file.chmod(0o600)

    def connection(self) -> list[str]:
        return ["--broker", f"{self.mosquitto.host}:{self.mosquitto.port}", "--ca-file", str(self.mosquitto.ca_file),
                "--username", OPERATOR[0], "--password-file", str(self.password_file)]

    def __call__(self, verb: str, *args: str, connection: list[str] | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "firmware_app.cli", "fleet", verb,
                *(self.connection() if connection is None else connection), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                              env={**os.environ, **(env or {})})

    def json(self, verb: str, *args: str) -> Any:
        done = self(verb, "--json", *args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def lines(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """``fleet send``'s lines by device: {"phone-a": "ok: {...}"}."""
    out = {}
    for line in done.stdout.splitlines():
        device, _, rest = line.partition(" ")
        out[device] = rest.strip()
    return out


@pytest.fixture
def fleet(mosquitto: Mosquitto, tmp_path: Path) -> Fleet:
    return Fleet(mosquitto, tmp_path)


@pytest.fixture
def two_phones(phone_factory, fleet_kamailio, mosquitto) -> tuple[PhoneProcess, PhoneProcess, Watcher]:
    """phone-a (dnd allowlisted) and phone-b (nothing allowlisted), online and registered on the broker."""
    watcher = operator(mosquitto)
    a = make_phone(phone_factory, fleet_kamailio, mosquitto, "phone-a", MQTT_PASSWORDS["phone-a"], ("dnd",),
                   ("floor-2", "reception")).start()
    b = make_phone(phone_factory, fleet_kamailio, mosquitto, "phone-b", MQTT_PASSWORDS["phone-b"],
                   groups=("floor-2",)).start()
    for device in ("phone-a", "phone-b"):
        wait_registered(watcher, device)
    return a, b, watcher


def test_list_shows_each_phone_online_with_its_state_and_registration(two_phones, fleet):
    done = fleet("list")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[:3] == ["DEVICE", "STATUS", "LAST"]
    assert [r.split()[0] for r in rows] == ["phone-a", "phone-b"]
    for row in rows:
        assert row.split()[1] == "online" and " now " in row and " idle " in row and " registered " in row, row
        assert row.endswith("  -"), row  # no problems

    phones = {p["device"]: p for p in fleet.json("list")}
    assert set(phones) == {"phone-a", "phone-b"}
    for p in phones.values():
        assert p["online"] is True and p["state"] == "idle" and p["registration"] == "registered"
        assert p["version"] and p["dnd"] is False and p["calls"] == 0 and p["problems"] == []
        assert p["last_seen_age_s"] == 0.0 and time.time() - 120 < p["online_since"] <= time.time() + 1
    assert [p["device"] for p in fleet.json("list", "*-b")] == ["phone-b"]  # a group glob


def test_a_killed_phone_is_listed_offline_by_its_last_will(two_phones, fleet, mosquitto):
    _, b, watcher = two_phones
    b.stop(signal.SIGKILL)
    watcher.wait(lambda m: m["topic"] == f"{PREFIX}/phone-b/online" and not payload(m)["online"], timeout=30)
    phones = {p["device"]: p for p in fleet.json("list")}
    assert phones["phone-a"]["online"] is True and phones["phone-a"]["problems"] == []
    gone = phones["phone-b"]
    assert gone["online"] is False and "offline" in gone["problems"]
    assert gone["registration"] == "registered"  # its last retained state: what it said before it vanished
    assert gone["last_seen_age_s"] is not None and gone["last_seen_age_s"] >= 0
    text = fleet("list")
    row = next(r for r in text.stdout.splitlines() if r.startswith("phone-b"))
    assert row.split()[1] == "offline" and " ago " in row and row.rstrip().endswith("offline"), row

    sent = fleet("send", "phone-b", "dnd", "on")  # nothing listens on an offline phone's cmd topic: not sent
    assert sent.returncode == 3, sent.stdout + sent.stderr
    assert lines(sent) == {"phone-b": "offline: not sent"}


def test_send_runs_an_allowlisted_command_and_reports_refusals_and_unknown_devices(two_phones, fleet):
    a, _, _ = two_phones
    done = fleet("send", "phone-a", "dnd", "on")
    assert done.returncode == 0, done.stdout + done.stderr
    said = lines(done)["phone-a"]
    assert said.startswith("ok: ") and json.loads(said.removeprefix("ok: "))["on"] is True
    assert a.status()["dnd"]["on"] is True

    refused = fleet("send", "phone-a", "doctor")  # not in phone-a's [telemetry] commands
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert lines(refused)["phone-a"].startswith("refused: ") and "not allowed" in refused.stdout

    # A group: phone-a allows dnd, phone-b allows nothing. One line each; any refusal makes it 1.
    group = fleet("send", "phone-*", "dnd", "off", "--json")
    assert group.returncode == 1, group.stdout + group.stderr
    outcome = {o["device"]: o for o in json.loads(group.stdout)}
    assert outcome["phone-a"]["outcome"] == "ok" and outcome["phone-a"]["result"]["on"] is False
    assert outcome["phone-b"]["outcome"] == "refused" and "not allowed" in outcome["phone-b"]["error"]

    # No such device: nothing is sent (its cmd topic has no subscriber: MQTT would drop the command), so the
    # fleet command refuses (1) rather than wait for an answer that cannot come (3 would say "may still run").
    unknown = fleet("send", "phone-zz", "dnd", "on")
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.count("\n") == 1 and "no phone matches 'phone-zz'" in unknown.stderr
    assert "known: phone-a, phone-b" in unknown.stderr and "nothing sent" in unknown.stderr


def test_send_to_a_phone_that_does_not_answer_says_so_and_exits_3(two_phones, fleet):
    a, _, watcher = two_phones
    assert a.process is not None
    a.process.send_signal(signal.SIGSTOP)  # its connection stays up: the broker still has it online
    try:
        done = fleet("send", "phone-a", "dnd", "on", "--timeout", "1", "--json")
    finally:
        a.process.send_signal(signal.SIGCONT)
    assert done.returncode == 3, done.stdout + done.stderr
    [outcome] = json.loads(done.stdout)
    assert outcome["outcome"] == "no answer" and "may still run" in outcome["error"]
    # It did: the command was delivered, and the phone runs it once it can.
    result = watcher.wait(lambda m: m["topic"] == f"{PREFIX}/phone-a/result/{outcome['id']}", timeout=15)
    assert payload(result)["ok"] is True and a.status()["dnd"]["on"] is True


def test_show_gives_one_phones_state_and_its_last_calls_quality(two_phones, fleet, fleet_kamailio, tmp_path):
    a, _, watcher = two_phones
    before = fleet("show", "phone-a")
    assert before.returncode == 0, before.stderr
    assert before.stdout.startswith("phone-a: online, last seen now")
    assert "registration registered" in before.stdout and "problems: none" in before.stdout
    assert "last call: none kept on the broker" in before.stdout
    assert "recent calls: none kept on the broker" in before.stdout

    caller = Baresip(tmp_path / "caller", "caller", SIP_USERS["caller"], fleet_kamailio).start()
    try:
        caller.dial(fleet_kamailio.uri("phone-a"))
        a.wait_state("ringing")
        a.cli("answer")
        caller.wait_event("CALL_ESTABLISHED")
        time.sleep(1.5)  # some audio (and RTCP) before the hang-up
        caller.hangup()
        watcher.wait(lambda m: m["topic"] == f"{PREFIX}/phone-a/last_call", timeout=15)
    finally:
        caller.stop()
    after = fleet("show", "phone-a")
    assert after.returncode == 0, after.stderr
    last = next(line for line in after.stdout.splitlines() if line.startswith("  last call: "))
    assert last.startswith("  last call: MOS ") and " ago); received " in last and "jitter" in last, last
    lines = after.stdout.splitlines()
    recent = lines[lines.index("  recent calls (1, newest first):") + 1]
    assert re.fullmatch(r"    \d+ s ago: incoming sip:caller@127\.0\.0\.1, talked \d+ s, ended 200 [^,]*, MOS \d\.\d",
                        recent), recent
    record = fleet.json("show", "phone-a")
    [call] = record["retained"]["recent_calls"]["calls"]
    assert call["quality"]["mos"] == record["last_call"]["mos"], "the call's own figures, wherever they came first"
    assert call["start"] <= call["answered"] <= call["end"]
    assert record["last_call"]["rx_packets"] > 20 and 1.0 <= record["last_call"]["mos"] <= 4.5
    listed = {p["device"]: p for p in fleet.json("list")}
    assert listed["phone-a"]["last_call"]["mos"] == record["last_call"]["mos"]
    assert listed["phone-b"]["last_call"] is None
    missing = fleet("show", "phone-zz")
    assert missing.returncode == 1 and "no phone 'phone-zz'" in missing.stderr


def test_connection_problems_are_one_line_with_the_clis_exit_codes(mosquitto, fleet, tmp_path):
    where = ["--broker", f"{mosquitto.host}:{mosquitto.port}", "--ca-file", str(mosquitto.ca_file),
             "--username", "operator"]
    empty = fleet("list", connection=where, env={"FIRMWARE_APP_MQTT_PASSWORD": OPERATOR[1]})
    assert (empty.returncode, empty.stdout.strip()) == (0, f"no phones under {PREFIX}/ on "
                                                           f"{mosquitto.host}:{mosquitto.port}")
    cases = {
        "no password": (where, {}, 2, "needs a password"),
        "bad password": (where, {"FIRMWARE_APP_MQTT_PASSWORD": "wrong"}, 1, "refused operator"),
        "wrong CA": (["--broker", f"{mosquitto.host}:{mosquitto.port}", "--ca-file", str(mosquitto.wrong_ca_file)],
                     {}, 2, "not trusted"),
        "no CA file": (["--broker", "127.0.0.1:1", "--ca-file", str(tmp_path / "nope.crt")], {}, 2, "no such file"),
        "bad broker": (["--broker", "127.0.0.1:port"], {}, 2, "expected HOST[:PORT]"),
        "no broker there": (["--broker", "127.0.0.1:1", "--ca-file", str(mosquitto.ca_file)], {}, 3, "no answer"),
    }
    for what, (connection, env, code, says) in cases.items():
        environ = {k: v for k, v in os.environ.items() if k != "FIRMWARE_APP_MQTT_PASSWORD"}
        done = subprocess.run([sys.executable, "-m", "firmware_app.cli", "fleet", "list", *connection],
                              capture_output=True, text=True, timeout=60, env={**environ, **env})
        assert (done.returncode, done.stdout) == (code, ""), f"{what}: {done.returncode} {done.stderr}"
        assert done.stderr.count("\n") == 1 and says in done.stderr and "Traceback" not in done.stderr, what

    # Without aiomqtt (the telemetry extra): exit 2 and how to install it.
    no_extra = subprocess.run([sys.executable, "-c", "import sys; sys.modules['aiomqtt'] = None\n"
                               "from firmware_app.cli import main; sys.exit(main(sys.argv[1:]))",
                               "fleet", "list", *fleet.connection()], capture_output=True, text=True, timeout=60)
    assert no_extra.returncode == 2 and "pip install 'firmware-app[telemetry]'" in no_extra.stderr
    assert no_extra.stderr.count("\n") == 1


def test_the_fleet_command_lists_twenty_phones_online_and_registered(phone_factory, fleet_kamailio, tmp_path):
    """20 real phone processes, one Kamailio and one Mosquitto: `fleet list --json` lists all 20."""
    if not mosquitto_installed():
        pytest.fail(NOT_INSTALLED, pytrace=False)
    broker = Mosquitto(tmp_path / "mosquitto")
    passwords = {device: f"pw-{device}" for device in FLEET}
    for user, password in (*passwords.items(), OPERATOR):
        broker.add_user(user, password)
    broker.start()
    phones = [make_phone(phone_factory, fleet_kamailio, broker, device, passwords[device], ("dnd",))
              for device in FLEET]
    try:
        watcher = operator(broker)
        started = time.monotonic()
        with ThreadPoolExecutor(len(phones)) as pool:
            list(pool.map(lambda p: p.start(registered=False, timeout=60), phones))
        for device in FLEET:
            wait_registered(watcher, device, timeout=60)
        ready = time.monotonic() - started

        fleet = Fleet(broker, tmp_path)
        took = time.monotonic()
        done = fleet("list", "--json")
        took = time.monotonic() - took
        assert done.returncode == 0, done.stderr
        listed = json.loads(done.stdout)
        assert [p["device"] for p in listed] == FLEET
        assert all(p["online"] and p["registration"] == "registered" and p["state"] == "idle" and not p["problems"]
                   for p in listed), listed

        sent = time.monotonic()
        group = fleet("send", "phone-*", "dnd", "on", "--timeout", "10")
        sent = time.monotonic() - sent
        assert group.returncode == 0, group.stdout + group.stderr
        answers = lines(group)
        assert sorted(answers) == FLEET and all(said.startswith("ok: ") for said in answers.values()), answers
        print(f"\nfleet: 20 phones online and registered {ready:.1f} s after their start; "
              f"`firmware-app fleet list --json` listed all 20 in {took * 1000:.0f} ms, `fleet send 'phone-*' dnd on` "
              f"had 20 results in {sent * 1000:.0f} ms (process start to exit)")
    finally:
        with ThreadPoolExecutor(len(phones)) as pool:
            list(pool.map(lambda p: p.stop(), phones))
        broker.stop()


def test_a_group_is_the_phones_that_say_they_belong_to_it(two_phones, fleet):
    assert [p["device"] for p in fleet.json("list", "@reception")] == ["phone-a"]
    assert [p["device"] for p in fleet.json("list", "@floor-2")] == ["phone-a", "phone-b"]
    assert fleet.json("list", "@floor-2")[0]["groups"] == ["floor-2", "reception"]
    assert fleet.json("list", "@nobody") == []

    sent = fleet("send", "@floor-2", "dnd", "on")

    assert sent.returncode == 1, sent.stdout + sent.stderr  # phone-b does not allow dnd
    by_device = lines(sent)
    assert by_device["phone-a"].startswith("ok: ") and '"on": true' in by_device["phone-a"]
    assert by_device["phone-b"].startswith("refused: the command 'dnd' is not allowed")
    none = fleet("send", "@nobody", "dnd")
    assert none.returncode == 1 and "no phone matches '@nobody'" in none.stderr
