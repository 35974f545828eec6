"""``firmware-app fleet``: the operators' view of the phones on the fleet's MQTT broker, and their commands.

The phones' telemetry plugin (plugins/softphone_telemetry) keeps, under ``PREFIX/DEVICE/``, a retained
``online`` message (``{"online": false}`` once the broker publishes its last will), a retained ``state``
(state, registration, DND, calls, devices, version) and a retained ``last_call`` (the last call's RTCP
figures and MOS), and runs the allowlisted commands sent to ``PREFIX/DEVICE/cmd`` (``{"id", "command",
"argument"}``), answering each on ``PREFIX/DEVICE/result/ID``.
This command connects as the fleet's operator (TLS, the broker's ACL lets it read ``PREFIX/#`` and write
``PREFIX/+/cmd/#``) and:

- ``fleet list [GLOB]``: every phone the broker holds retained messages for, one line each: online or
  offline, last seen, version, state, registration and problems (offline, not registered, DND on, a device
  not connected, a last call whose MOS is under :data:`POOR_MOS`);
- ``fleet show DEVICE``: one phone's retained state, its last call's quality, and whatever else it keeps
  retained (the calls before the last one are not kept on the broker: event/call and event/quality are live);
- ``fleet send DEVICE|GLOB COMMAND [ARGUMENT]``: a command with a fresh id to each matching phone that is
  online, and each phone's result.

The retained messages come right after the subscription; the gathering ends once none has come for
:data:`QUIET_S` seconds (at most ``--timeout``). Exit codes are the CLI's: 0 done, 1 refused (a phone said
no, or no phone matches), 2 configuration (options, files, the aiomqtt library), 3 no answer (the broker
cannot be reached, or a phone is offline or did not answer in time). aiomqtt (the ``telemetry`` extra) is
imported only when a fleet command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import importlib
import json
import logging
import os
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware_app.cli import _seconds  # the CLI's own check of a --timeout
from firmware_app.errors import ConfigError, FirmwareAppError, NoAnswerError

if TYPE_CHECKING:
    import aiomqtt

QUIET_S = 0.3  # the gathering of retained messages ends once none came for this long
PASSWORD_ENV = "FIRMWARE_APP_MQTT_PASSWORD"
EXTRA = "pip install 'firmware-app[telemetry]'"
DEFAULT_PORT = 8883
GOOD_DEVICE_STATES = ("connected", "ready")
POOR_MOS = 3.6  # E-model R 70: below it many users are dissatisfied (ITU-T G.107 Annex B)
DESCRIPTION = ("online", "state", "last_call")  # the retained subtopics that describe a phone
# CONNACK: bad user name or password, not authorised (MQTT 3.1.1); the same two as MQTT 5 reason codes
REFUSED_CODES = (4, 5, 0x86, 0x87)
# The CLI's exit codes (cli.py)
EXIT_OK, EXIT_REFUSED, EXIT_NO_ANSWER = 0, 1, 3


# --- the command line ---------------------------------------------------------------------------------------


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """``fleet list|show|send`` under the CLI's subcommands (``sub``: its add_subparsers())."""
    help = "the fleet on its MQTT broker: list the phones, show one, send them a command"
    fleet = sub.add_parser("fleet", help=help, description=help)
    common = argparse.ArgumentParser(add_help=False)
    c = common.add_argument_group("the broker")
    c.add_argument("--broker", required=True, metavar="HOST[:PORT]", help=f"the broker (TLS; port {DEFAULT_PORT} "
                   "by default)")
    c.add_argument("--ca-file", metavar="FILE", help="the CA that signed the broker's certificate (default: the "
                   "system's CAs)")
    c.add_argument("--username", help="the operator's user name on the broker")
    c.add_argument("--password-file", metavar="FILE", help=f"a file holding the password (or ${PASSWORD_ENV}; "
                   "never on the command line)")
    c.add_argument("--prefix", default="firmware-app", help="the phones' topic prefix (default: %(default)s)")
    c.add_argument("--timeout", dest="fleet_timeout", type=_seconds, default=3.0, metavar="SECONDS",
                   help="at most this long to gather the phones' messages, and again for their results "
                   "(default: %(default)g)")
    c.add_argument("--json", action="store_true", help="print JSON, for scripts")
    verbs = fleet.add_subparsers(required=True, metavar="ACTION")

    def verb(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    verb("list", run_list, "every phone: online, last seen, version, state, registration, problems").add_argument(
        "group", nargs="?", metavar="GLOB|@GROUP", help="only the devices whose name matches, e.g. 'desk-*', or "
        "those in a group of their [telemetry] groups, e.g. '@floor-2'")
    verb("show", run_show, "one phone's state and what it keeps on the broker").add_argument("device")
    p = verb("send", run_send, "send an allowlisted command to a phone or a group and print each result")
    p.add_argument("target", metavar="DEVICE|GLOB|@GROUP")
    p.add_argument("command", help="doctor, test_call, dnd... (the phone's [telemetry] commands allow it or not)")
    p.add_argument("argument", nargs="?", help="the command's argument, e.g. on or off for dnd")
    return fleet


def run_list(args: argparse.Namespace) -> int:
    return _run(args, _list)


def run_show(args: argparse.Namespace) -> int:
    return _run(args, _show)


def run_send(args: argparse.Namespace) -> int:
    return _run(args, _send)


# --- what the broker holds about each phone -------------------------------------------------------------


@dataclass
class PhoneView:
    """One phone as its retained messages describe it."""

    device: str
    online: bool | None = None  # None: no online message
    online_since: float | None = None  # the online message's time, when it says online
    state: dict[str, Any] | None = None
    last_call: dict[str, Any] | None = None  # the last call's quality (retained since the plugin's HA slice)
    other: dict[str, Any] = field(default_factory=dict)  # other retained subtopics, by subtopic
    times: list[float] = field(default_factory=list)  # the times the phone put in its retained messages

    def take(self, subtopic: str, payload: Any) -> None:
        if isinstance(payload, dict) and isinstance(payload.get("time"), (int, float)):
            self.times.append(float(payload["time"]))
        if subtopic == "online":
            body = payload if isinstance(payload, dict) else {}
            self.online = body.get("online") is True
            self.online_since = body.get("time") if self.online else None
        elif subtopic == "state":
            self.state = payload if isinstance(payload, dict) else None
        elif subtopic == "last_call":
            self.last_call = payload if isinstance(payload, dict) else None
        else:
            self.other[subtopic] = payload

    @property
    def groups(self) -> list[str]:
        groups = (self.state or {}).get("groups")
        return [g for g in groups if isinstance(g, str)] if isinstance(groups, list) else []

    @property
    def last_message(self) -> float | None:
        return max(self.times) if self.times else None

    def problems(self) -> list[str]:
        s = self.state or {}
        found = []
        if self.online is None:
            found.append("no online message")
        elif not self.online:
            found.append("offline")
        if self.state is None:
            found.append("no state")
        else:
            if isinstance(s.get("schema"), int) and s["schema"] > 1:
                found.append(f"state schema {s['schema']} (newer than this command)")
            if s.get("registration") != "registered":
                found.append(f"not registered ({s.get('registration') or 'unknown'})")
            if s.get("dnd"):
                found.append("DND on")
            devices = s.get("devices") if isinstance(s.get("devices"), dict) else {}
            found += [f"{name} {state}" for name, state in sorted(devices.items()) if state not in GOOD_DEVICE_STATES]
        mos = (self.last_call or {}).get("mos")
        if isinstance(mos, (int, float)) and mos < POOR_MOS:
            found.append(f"last call poor (MOS {mos:.1f})")
        return found

    def record(self, now: float) -> dict[str, Any]:
        s = self.state or {}
        last = self.last_message
        seen_age = 0.0 if self.online else (None if last is None else round(max(0.0, now - last), 1))
        record = {
            "device": self.device,
            "online": self.online,
            "online_since": self.online_since,
            "last_message": last,
            "last_seen_age_s": seen_age,
            "version": s.get("image_version") or s.get("version"),
            "app_version": s.get("version"),
            "groups": self.groups,
            "state": s.get("state"),
            "registration": s.get("registration"),
            "dnd": s.get("dnd"),
            "calls": s.get("calls"),
            "devices": s.get("devices"),
            "headset": s.get("headset"),
            "last_call": self.last_call,
            "problems": self.problems(),
        }
        if self.other:
            record["retained"] = self.other
        return record


def age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def last_seen(phone: dict[str, Any], now: float) -> str:
    if phone["online"]:
        since = phone["online_since"]
        return "now" + (f" (up {age(now - since)})" if isinstance(since, (int, float)) else "")
    return "?" if phone["last_seen_age_s"] is None else f"{age(phone['last_seen_age_s'])} ago"


def status_word(online: bool | None) -> str:
    return {True: "online", False: "offline", None: "unknown"}[online]


# --- the connection -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    ca_file: Path | None
    username: str | None
    password: str | None
    prefix: str
    timeout: float

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def settings(args: argparse.Namespace) -> Settings:
    broker = args.broker.strip()
    host, sep, port = broker.rpartition(":") if broker.count(":") == 1 else (broker, "", str(DEFAULT_PORT))
    if not host or (sep and not port.isdigit()) or not 0 < int(port or 0) < 65536:
        raise ConfigError("--broker", "", f"expected HOST[:PORT], got {args.broker!r}")
    ca_file = None
    if args.ca_file:
        ca_file = Path(args.ca_file)
        if not ca_file.is_file():
            raise ConfigError("--ca-file", "", f"no such file: {ca_file}")
    password = None
    if args.password_file:
        try:
            password = Path(args.password_file).read_text().rstrip("\r\n")
        except OSError as e:
            raise ConfigError("--password-file", "", f"cannot read {args.password_file}: {e.strerror or e}") from None
    elif PASSWORD_ENV in os.environ:
        password = os.environ[PASSWORD_ENV]
    if args.username and password is None:
        raise ConfigError("--username", "", f"needs a password: --password-file FILE or ${PASSWORD_ENV}")
    prefix = args.prefix.strip("/")
    if not prefix or "+" in prefix or "#" in prefix:
        raise ConfigError("--prefix", "", f"expected a topic without wildcards, got {args.prefix!r}")
    return Settings(host, int(port), ca_file, args.username or None, password, prefix, args.fleet_timeout)


def _run(args: argparse.Namespace, action: Any) -> int:
    s = settings(args)
    try:
        importlib.import_module("aiomqtt")  # the telemetry extra: only the fleet commands need it
    except ImportError:
        raise ConfigError("fleet", "", f"needs the aiomqtt library: {EXTRA}") from None
    return int(asyncio.run(action(args, s)))


class Session:
    """One operator connection: every message it receives, kept; waiters woken on each."""

    def __init__(self, client: aiomqtt.Client, s: Settings) -> None:
        self.client = client
        self.s = s
        self.phones: dict[str, PhoneView] = {}
        self.results: dict[str, dict[str, Any]] = {}  # command id -> the phone's result
        self.changed = asyncio.Event()
        self.last_retained = 0.0
        self.lost: str | None = None  # why the connection went, if it did
        self._pump: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Session:
        self._pump = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pump is not None:
            self._pump.cancel()

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for message in self.client.messages:
                self._take(str(message.topic), message.payload, bool(message.retain), loop.time())
                self.changed.set()
        except Exception as e:  # the connection went: whoever waits is woken and raises NoAnswerError
            self.lost = str(e) or type(e).__name__
            self.changed.set()

    def _check(self) -> None:
        if self.lost is not None:
            raise NoAnswerError(f"the broker {self.s.where} closed the connection: {self.lost}")

    async def subscribe(self, topics: list[tuple[str, int]]) -> None:
        """Subscribe; a broker that refuses (SUBACK 0x80, e.g. its ACL) is an error, not an empty fleet.
        Mosquitto grants a subscription outside the ACL and filters on delivery: then nothing comes."""
        granted = await self.client.subscribe(topics)
        refused = [topic for (topic, _), code in zip(topics, granted, strict=False)
                   if int(getattr(code, "value", code)) >= 0x80]
        if refused:
            raise FirmwareAppError(f"the broker {self.s.where} refused the subscription to {', '.join(refused)} "
                                   f"for {self.s.username or 'us'} (its ACL?)")

    def _take(self, topic: str, raw: Any, retained: bool, now: float) -> None:
        head = self.s.prefix + "/"
        if not topic.startswith(head):
            return
        device, _, subtopic = topic[len(head):].partition("/")
        try:
            payload = json.loads(raw if isinstance(raw, (bytes, bytearray, str)) else str(raw))
        except ValueError:
            payload = None
        if subtopic.startswith("result/"):
            if isinstance(payload, dict):
                self.results[subtopic.removeprefix("result/")] = payload
            return
        if retained:
            self.last_retained = now
        if not device or not subtopic or subtopic == "cmd" or (not retained and subtopic not in DESCRIPTION):
            return  # live events (calls, quality...) and commands are not the phone's description
        self.phones.setdefault(device, PhoneView(device)).take(subtopic, payload)

    async def gather(self, device: str = "+", subtopics: tuple[str, ...] = DESCRIPTION) -> None:
        """Subscribe, then take the retained messages until none came for QUIET_S (at most the timeout)."""
        loop = asyncio.get_running_loop()
        await self.subscribe([(f"{self.s.prefix}/{device}/{sub}", 1) for sub in subtopics])
        deadline = loop.time() + self.s.timeout
        self.last_retained = loop.time()
        await self._wait(lambda: min(deadline, self.last_retained + QUIET_S) - loop.time())

    async def wait_results(self, ids: set[str]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.s.timeout
        await self._wait(lambda: 0.0 if ids <= self.results.keys() else deadline - loop.time())

    async def _wait(self, left: Callable[[], float]) -> None:
        """Wake at each message until ``left()`` (seconds still to wait) is not positive or the connection is lost."""
        while self.lost is None and (seconds := left()) > 0:
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), seconds)
        self._check()


def _tls(s: Settings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)


async def _connected(args: argparse.Namespace, s: Settings, work: Any) -> int:
    """Connect as the operator, run ``work(session)``, disconnect; broker errors become the CLI's errors."""
    import aiomqtt

    quiet = logging.getLogger("firmware_app.fleet.mqtt")  # paho's chatter: the outcome line says what matters
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
    client = aiomqtt.Client(s.host, s.port, username=s.username, password=s.password, tls_context=_tls(s),
                            identifier=f"firmware-app-fleet-{uuid.uuid4().hex[:12]}", clean_session=True,
                            timeout=max(s.timeout, 5.0), logger=quiet)
    try:
        async with client, Session(client, s) as session:
            return int(await work(session))
    except aiomqtt.MqttCodeError as e:
        code = getattr(e.rc, "value", e.rc)
        if code in REFUSED_CODES or "authori" in str(e).lower() or "password" in str(e).lower():
            raise FirmwareAppError(f"the broker {s.where} refused {s.username or 'us'}: {e}") from None
        raise NoAnswerError(f"the broker {s.where}: {e}") from None
    except aiomqtt.MqttError as e:
        text = str(e)
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            where = f"--ca-file {s.ca_file}" if s.ca_file else "the system's CAs (--ca-file)"
            raise ConfigError("--ca-file", "", f"the broker {s.where}'s certificate is not trusted by {where}: "
                              f"{text}") from None
        raise NoAnswerError(f"no answer from the broker {s.where}: {text or type(e).__name__}") from None


def _print_json(value: Any) -> None:
    print(json.dumps(value, separators=(",", ":")))


# --- list -----------------------------------------------------------------------------------------------


async def _list(args: argparse.Namespace, s: Settings) -> int:
    async def work(session: Session) -> int:
        await session.gather()
        now = time.time()
        phones = [session.phones[d].record(now) for d in selected(session.phones, args.group)]
        if args.json:
            _print_json(phones)
        elif not phones:
            print(f"no phones{f' matching {args.group!r}' if args.group else ''} under {s.prefix}/ on {s.where}")
        else:
            print(_table(phones, now))
        return EXIT_OK

    return await _connected(args, s, work)


def selected(phones: dict[str, PhoneView], target: str | None) -> list[str]:
    """The devices ``target`` names, sorted: all (None), a group (``@floor-2``: its [telemetry] groups say it
    belongs), or a name or glob (``desk-*``)."""
    if target is None:
        return sorted(phones)
    if target.startswith("@"):
        return sorted(d for d, view in phones.items() if target[1:] in view.groups)
    return sorted(d for d in phones if fnmatch.fnmatchcase(d, target))


def _table(phones: list[dict[str, Any]], now: float) -> str:
    head = ("DEVICE", "STATUS", "LAST SEEN", "VERSION", "STATE", "REGISTRATION", "PROBLEMS")
    rows = [(p["device"], status_word(p["online"]), last_seen(p, now), str(p["version"] or "?"),
             str(p["state"] or "?"), str(p["registration"] or "?"), ", ".join(p["problems"]) or "-") for p in phones]
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
                     for row in (head, *rows))


# --- show -----------------------------------------------------------------------------------------------


async def _show(args: argparse.Namespace, s: Settings) -> int:
    device = args.device
    if not device or any(ch in device for ch in "+#/"):
        raise ConfigError("device", "", f"expected one device's name (a topic level), got {device!r}")

    async def work(session: Session) -> int:
        await session.gather(device, ("#",))  # its online and state, and anything else it keeps retained
        phone = session.phones.get(device)
        if phone is None:
            raise FirmwareAppError(f"no phone {device!r} under {s.prefix}/ on {s.where}: the broker holds nothing "
                                   "retained for it")
        now = time.time()
        record = phone.record(now)
        if args.json:
            _print_json(record)
            return EXIT_OK
        st = record
        lines = [f"{device}: {status_word(st['online'])}, last seen {last_seen(st, now)}, version "
                 f"{st['version'] or '?'}",
                 f"  state {st['state'] or '?'}, registration {st['registration'] or '?'}, DND "
                 f"{'on' if st['dnd'] else 'off'}, calls {st['calls'] if st['calls'] is not None else '?'}"]
        devices = st["devices"] or {}
        lines.append("  devices: " + (", ".join(f"{k} {v}" for k, v in sorted(devices.items())) or "none reported"))
        lines.append("  problems: " + (", ".join(st["problems"]) or "none"))
        lines.append("  last call: " + (_quality(phone.last_call, now) if phone.last_call else
                                        f"none kept on the broker ({s.prefix}/{device}/last_call)"))
        recent = phone.other.get("recent_calls")
        calls = recent.get("calls") if isinstance(recent, dict) else None
        if isinstance(calls, list) and calls:
            lines.append(f"  recent calls ({len(calls)}, newest first):")
            lines += [f"    {_recent_call(c, now)}" for c in calls if isinstance(c, dict)]
        else:
            lines.append(f"  recent calls: none kept on the broker ({s.prefix}/{device}/recent_calls)")
        for subtopic, payload in sorted(phone.other.items()):
            if subtopic == "recent_calls":
                continue
            lines.append(f"  {subtopic}: {json.dumps(payload)}")
        print("\n".join(lines))
        return EXIT_OK

    return await _connected(args, s, work)


def _recent_call(c: dict[str, Any], now: float) -> str:
    """One ended call on one line: when, which way, who, how long, how it ended, its MOS."""
    start, answered, end = c.get("start"), c.get("answered"), c.get("end")
    when = f"{age(now - start)} ago" if isinstance(start, (int, float)) else "?"
    if isinstance(answered, (int, float)) and isinstance(end, (int, float)):
        talk = f"talked {end - answered:.0f} s"
    else:
        talk = "not answered"
    code = c.get("status_code")
    ended = f", ended {code} {c.get('reason') or ''}".rstrip() if code else ""
    mos = (c.get("quality") or {}).get("mos")
    quality = f", MOS {mos:.1f}" if isinstance(mos, (int, float)) else ""
    return f"{when}: {c.get('direction') or '?'} {c.get('remote_uri') or '?'}, {talk}{ended}{quality}"


def _quality(q: dict[str, Any], now: float) -> str:
    """The last call's quality on one line: MOS, received loss, jitter, round trip."""
    def num(key: str, digits: int = 1) -> str:
        value = q.get(key)
        return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "?"

    when = q.get("time")
    ago = f" ({age(now - when)} ago)" if isinstance(when, (int, float)) else ""
    return (f"MOS {num('mos')}{ago}; received {q.get('rx_packets', '?')} packets, {q.get('rx_lost', '?')} lost "
            f"({num('rx_loss_percent')} %), jitter {num('jitter_ms')} ms (max {num('jitter_max_ms')}), round trip "
            f"{num('rtt_ms')} ms; sent {q.get('tx_packets', '?')}")


# --- send -----------------------------------------------------------------------------------------------


async def _send(args: argparse.Namespace, s: Settings) -> int:
    target = args.target
    if not target or any(ch in target for ch in "+#/"):
        raise ConfigError("target", "", f"expected a device or a glob such as 'desk-*', got {target!r}")

    async def work(session: Session) -> int:
        await session.gather()
        matching = selected(session.phones, target)
        if not matching:
            known = sorted(session.phones)
            listed = ", ".join(known[:10]) + (f" and {len(known) - 10} more" if len(known) > 10 else "")
            raise FirmwareAppError(f"no phone matches {target!r} under {s.prefix}/ on {s.where} "
                                   f"({f'known: {listed}' if known else 'the broker holds no phone'}); nothing sent")
        online = [d for d in matching if session.phones[d].online]
        ids = {d: str(uuid.uuid4()) for d in online}
        if ids:
            await session.subscribe([(f"{s.prefix}/{d}/result/{i}", 1) for d, i in ids.items()])

            def body(command_id: str) -> str:
                extra = {} if args.argument is None else {"argument": args.argument}
                return json.dumps({"id": command_id, "command": args.command, **extra})

            # All at once: each publish waits for its PUBACK, and a group should not wait for them in turn.
            await asyncio.gather(*(session.client.publish(f"{s.prefix}/{device}/cmd", body(command_id), qos=1)
                                   for device, command_id in ids.items()))
            await session.wait_results(set(ids.values()))
        outcomes = []
        for device in matching:
            if device not in ids:
                outcomes.append({"device": device, "outcome": "offline", "error": "offline: not sent"})
                continue
            answer = session.results.get(ids[device])
            if answer is None:
                outcomes.append({"device": device, "id": ids[device], "outcome": "no answer",
                                 "error": f"no answer within {s.timeout:g} s (sent: it may still run)"})
            elif answer.get("ok") is True:
                outcomes.append({"device": device, "id": ids[device], "outcome": "ok", "result": answer.get("result")})
            else:
                outcomes.append({"device": device, "id": ids[device], "outcome": "refused",
                                 "error": str(answer.get("error") or "refused")})
        if args.json:
            _print_json(outcomes)
        else:
            width = max(len(d) for d in matching)
            for o in outcomes:
                if o["outcome"] == "ok":
                    result = o["result"]
                    said = "done" if result is None else (json.dumps(result) if isinstance(result, (dict, list))
                                                          else str(result))
                    print(f"{o['device']:<{width}}  ok: {said}")
                elif o["outcome"] == "refused":
                    print(f"{o['device']:<{width}}  refused: {o['error']}")
                else:
                    print(f"{o['device']:<{width}}  {o['error']}")
        kinds = {o["outcome"] for o in outcomes}
        if kinds & {"no answer", "offline"}:
            return EXIT_NO_ANSWER
        return EXIT_REFUSED if "refused" in kinds else EXIT_OK

    return await _connected(args, s, work)
