"""Plugin: the phone on the fleet's MQTT broker: what it does, how its calls sounded, and allowlisted commands.

Under ``PREFIX/DEVICE/`` (``firmware-app/desk-12/``) the phone publishes, as JSON with a ``schema`` version:

| topic | retained | what |
|---|---|---|
| ``online`` | yes | ``{"online": true, ...}``; the broker publishes ``{"online": false}`` (the last will) if the phone vanishes |
| ``state`` | yes | the phone's state, registration, DND, headsets: whenever one changes |
| ``event/call`` | no | each call's changes (start, answer, end with its code) |
| ``event/quality`` | no | a call's audio at its end: RTCP loss, jitter, round trip, an E-model MOS |
| ``event/transfer`` | no | a transfer's progress and outcome, with its target |
| ``event/button`` | no | button events, only with ``buttons = true`` |
| ``event/device`` | no | headsets and other input devices coming and going |
| ``result/ID`` | no | the answer to command ``ID`` |

Commands arrive on ``PREFIX/DEVICE/cmd`` only, as ``{"id": "...", "command": "doctor" | "test_call" | "dnd" |
"reload_provisioning" | "restart", "argument": ...}``, and only those listed in ``commands`` run; every command gets a result (ok or
an error naming why). The broker's ACL is the authorization: a phone may write its own subtree only.

The call path never waits for the network: messages go into a bounded buffer (``buffer`` messages, the oldest
dropped first, with a count), and a task on the phone's loop sends them while the broker is there.

```toml
[telemetry]
broker = "mqtt.example.com:8883"     # TLS, the server's certificate verified
device = ""                          # "" = the host name
prefix = "firmware-app"
username = "desk-12"                 # password: mqtt_password in the secrets file
client_cert = ""                     # or a client certificate and key (files)
client_key = ""
ca_file = ""                         # "" = the system's CAs
commands = ["doctor", "dnd"]         # allowlisted remote commands; [] = none (the default)
test_call = ""                       # the number the test_call command calls
buttons = false
buffer = 1000
```
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import os
import socket
import ssl
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import Meta

from firmware_app import Phone, __version__, hookimpl
from firmware_app.config import Config
from firmware_app.errors import CommandError, ConfigError
from firmware_app.extras import import_extra
from firmware_app.inputs import Backoff

if TYPE_CHECKING:
    import aiomqtt

log = logging.getLogger("firmware_app.telemetry")

#: How often paho's housekeeping (the keepalive PINGREQ, the PINGRESP timeout) runs, as a share of keepalive_s.
HOUSEKEEPING_SHARE = 6

SCHEMA = 1  # of every message's JSON; raised when a field changes meaning or goes away
MAX_COMMAND = 4096  # bytes: a longer command payload is refused unread
Command = Literal["doctor", "test_call", "dnd", "reload_provisioning", "restart"]
#: Written (its time changed) to ask for provisioning now: firmware-provision-request.path starts the unit.
PROVISIONING_REQUEST = "provisioning-requested"
DOCTOR_TIMEOUT_S = 60.0
RECENT_CALLS = 10  # kept retained in recent_calls, newest first
IMAGE_VERSION = Path("/usr/lib/firmware-app/image-version")  # the A/B image's version of the running slot


class TelemetryConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    broker: str = ""
    device: str = ""
    prefix: str = "firmware-app"
    username: str = ""
    client_cert: str = ""
    client_key: str = ""
    ca_file: str = ""
    commands: list[Command] = []
    test_call: str = ""
    test_call_s: Annotated[float, Meta(ge=1, le=120)] = 5.0  # how long the test call lasts
    buttons: bool = False
    groups: list[Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]] = []  # for fleet list/send @GROUP
    heartbeat_s: Annotated[int, Meta(ge=0, le=86_400)] = 300  # the retained online's time refreshed; 0 = never
    buffer: Annotated[int, Meta(ge=10, le=100_000)] = 1000
    home_assistant: bool = False  # MQTT discovery: the phone appears in Home Assistant as a device
    discovery_prefix: str = "homeassistant"
    keepalive_s: Annotated[int, Meta(ge=10, le=3600)] = 60
    retry_first_s: Annotated[float, Meta(ge=0.1, le=60)] = 1.0
    retry_max_s: Annotated[float, Meta(ge=0.1, le=3600)] = 60.0


class TelemetryPlugin:
    def __init__(self) -> None:
        self.config = TelemetryConfig()
        self.enabled = False
        self.phone: Phone | None = None
        self.host, self.port = "", 8883
        self.device = ""
        self.password: str | None = None
        self.files: dict[str, Path] = {}
        self.config_path = Path("/etc/firmware-app/config.toml")
        self.outbox: collections.deque[tuple[str, bytes, bool]] = collections.deque()
        self.dropped = 0
        self.connected = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Any = None
        self._state: dict[str, Any] = {}
        self._devices: dict[str, str] = {}
        self._calls: dict[Any, dict[str, Any]] = {}  # calls in progress: id -> their summary so far
        self._recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_CALLS)
        self._image_version = _image_version()

    # --- configuration and lifecycle --------------------------------------------------------------------

    @hookimpl
    def softphone_configure(self, config: Config) -> None:
        present = "telemetry" in config.raw
        c = self.config = config.convert(config.section("telemetry"), TelemetryConfig, "telemetry")
        self.config_path = config.path
        if not present:
            return
        file = str(config.path)
        if not c.broker:
            raise ConfigError(file, "telemetry.broker", "expected the broker's host[:port] (TLS, port 8883 by default)")
        host, _, port = c.broker.rpartition(":") if c.broker.count(":") == 1 else (c.broker, "", "8883")
        if not port.isdigit():
            raise ConfigError(file, "telemetry.broker", f"expected host[:port], got {c.broker!r}")
        self.host, self.port = host, int(port)
        if bool(c.client_cert) != bool(c.client_key):
            raise ConfigError(file, "telemetry.client_cert", "give the client certificate and its key together")
        for key in ("client_cert", "client_key", "ca_file"):
            if value := getattr(c, key):
                path = Path(value) if Path(value).is_absolute() else config.path.parent / value
                if not path.is_file():
                    raise ConfigError(file, f"telemetry.{key}", f"no such file: {path}")
                self.files[key] = path
        if "test_call" in c.commands and not c.test_call:
            raise ConfigError(file, "telemetry.test_call", "the test_call command needs the number to call")
        self.password = config.secrets.get("mqtt_password")
        if c.username and self.password is None and not c.client_cert and config.secrets_loaded:
            raise ConfigError(file, "telemetry.username", "needs mqtt_password in the secrets file (or a client_cert)")
        self.device = c.device or socket.gethostname()
        if not all(ch.isalnum() or ch in "-_." for ch in self.device):
            raise ConfigError(file, "telemetry.device", f"letters, digits, - _ and . only (an MQTT topic level), got {self.device!r}")
        self.enabled = import_extra(log, "softphone_telemetry", "telemetry", ("aiomqtt",), "the phone runs without its telemetry")

    @hookimpl
    def softphone_startup(self, phone: Phone) -> None:
        if not self.enabled:
            return
        self.phone = phone
        self._wake = asyncio.Event()
        self._unsubscribe = phone.subscribe(self._on_event)
        self._task = phone.spawn(self._run())
        self._publish_state()

    @hookimpl
    def softphone_shutdown(self, phone: Phone) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._task is not None:
            self._task.cancel()

    def topic(self, *parts: str) -> str:
        return "/".join((self.config.prefix, self.device, *parts))

    # --- what the phone says -> the outbox ---------------------------------------------------------------

    def send(self, subtopic: str, payload: dict[str, Any], *, retain: bool = False) -> None:
        """Queue a message; never waits. The oldest are dropped first when the broker has been away long."""
        body = json.dumps({"schema": SCHEMA, "device": self.device, "time": round(time.time(), 3), **payload},
                          separators=(",", ":")).encode()
        if len(self.outbox) >= self.config.buffer:
            self.outbox.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("telemetry: the broker is away; %s messages dropped so far (oldest first)", self.dropped)
        self.outbox.append((self.topic(subtopic), body, retain))
        self._wake.set()

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        fields = {k: v for k, v in event.items() if k not in ("event", "time")}
        if kind == "call":
            self.send("event/call", fields)
            self._track_call(fields)
        elif kind == "call_quality":
            self.send("event/quality", fields)
            self.send("last_call", fields, retain=True)  # the fleet's dashboards show the last call's quality
            self._track_quality(fields)
        elif kind == "transfer":
            self.send("event/transfer", fields)
        elif kind == "input" and self.config.buttons:
            self.send("event/button", fields)
        elif kind == "input_device":
            self.send("event/device", fields)
            self._devices[f"{event.get('source')}:{event.get('device')}"] = str(event.get("state"))
            self._publish_state()
        elif kind in ("state", "registration", "dnd", "line", "update"):
            self._publish_state()

    def _publish_state(self) -> None:
        phone = self.phone
        if phone is None:
            return
        status = phone.status()
        state = {
            "state": status.get("state"),
            "registration": (status.get("registration") or {}).get("state"),
            "dnd": (status.get("dnd") or {}).get("on", False),
            "calls": len(status.get("calls", [])),
            "devices": dict(self._devices),  # headsets and buttons: "usb_headset:headset": "connected"...
            "headset": any(d.startswith(("hfp:", "usb_headset:")) and v == "connected" for d, v in self._devices.items()),
            "version": __version__,
            "image_version": self._image_version,
            "update": (status.get("update") or {}).get("state"),  # a software update under way, or None
            "groups": list(self.config.groups),
        }
        if state != self._state:
            self._state = state
            self.send("state", state, retain=True)

    def _track_call(self, call: dict[str, Any]) -> None:
        """The call's summary for recent_calls: who, which way, when answered and ended, and how."""
        now = round(time.time(), 3)
        summary = self._calls.setdefault(call.get("id"), {
            "id": call.get("id"), "direction": call.get("direction"), "remote_uri": call.get("remote_uri"), "start": now,
        })
        if call.get("state") == "active":
            summary.setdefault("answered", now)
        if call.get("state") == "ended":
            del self._calls[call.get("id")]
            summary.update(end=now, status_code=call.get("status_code"), reason=call.get("reason"))
            self._recent.appendleft(summary)
            self._publish_recent()

    def _track_quality(self, quality: dict[str, Any]) -> None:
        """A call's audio figures, into its summary (they may come just before or just after its end)."""
        brief = {k: quality.get(k) for k in ("mos", "rx_loss_percent", "jitter_ms", "rtt_ms")}
        summary = self._calls.get(quality.get("call_id"))
        if summary is not None:
            summary["quality"] = brief
            return
        for ended in self._recent:
            if ended["id"] == quality.get("call_id"):
                ended["quality"] = brief
                self._publish_recent()
                return

    def _publish_recent(self) -> None:
        self.send("recent_calls", {"calls": list(self._recent)}, retain=True)

    # --- the connection ---------------------------------------------------------------------------------

    def _tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.files["ca_file"]) if "ca_file" in self.files else None)
        if "client_cert" in self.files:
            context.load_cert_chain(str(self.files["client_cert"]), str(self.files["client_key"]))
        return context

    async def _run(self) -> None:
        import aiomqtt

        backoff = Backoff(self.config.retry_first_s, max(self.config.retry_first_s, self.config.retry_max_s))
        said = ""
        offline = json.dumps({"schema": SCHEMA, "device": self.device, "online": False})
        will = aiomqtt.Will(self.topic("online"), offline, qos=1, retain=True)
        while True:
            try:
                async with _quiet(aiomqtt.Client)(
                    self.host, self.port, username=self.config.username or None, password=self.password,
                    identifier=f"{self.config.prefix}-{self.device}", will=will, tls_context=self._tls(),
                    keepalive=self.config.keepalive_s, timeout=10,
                ) as client:
                    self.connected, said = True, ""
                    backoff.reset()
                    log.info("telemetry: connected to %s:%s as %s", self.host, self.port, self.device)
                    await client.subscribe(self.topic("cmd"), qos=1)
                    await client.publish(self.topic("online"), json.dumps(
                        {"schema": SCHEMA, "device": self.device, "online": True, "time": round(time.time(), 3)}),
                        qos=1, retain=True)
                    if self.config.home_assistant:
                        for topic, config in self.discovery().items():
                            await client.publish(topic, json.dumps(config), qos=1, retain=True)
                    sender = asyncio.create_task(self._drain(client))
                    if self.config.heartbeat_s:
                        heart = asyncio.create_task(self._heartbeat(client))
                        sender.add_done_callback(lambda _: heart.cancel())
                    try:
                        async for message in client.messages:
                            await self._command(message)
                    except asyncio.CancelledError:
                        # The phone stops: what is still in the outbox (the last call, a command's result) goes
                        # out first, for a second at most; a clean disconnect cancels the last will, so then
                        # say offline ourselves.
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(self._flush(client), 1.0)
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(client.publish(self.topic("online"), offline, qos=1, retain=True), 1.0)
                        raise
                    finally:
                        sender.cancel()
                        with contextlib.suppress(BaseException):  # its failure is the connection's, said below
                            await sender
            except asyncio.CancelledError:
                raise
            except Exception as e:  # aiomqtt.MqttError, ssl errors, OSError: said once per kind of failure
                self.connected = False
                reason = str(e) or type(e).__name__
                if reason != said:
                    log.warning("telemetry: broker %s:%s: %s; trying again with a backoff (calls are not affected)",
                                self.host, self.port, reason)
                    said = reason
            await asyncio.sleep(backoff.next())

    async def _heartbeat(self, client: aiomqtt.Client) -> None:
        """The retained online message again every heartbeat_s: an operator sees when a vanished phone was last
        alive, not only when it connected (the last will carries no time)."""
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            self.send("online", {"online": True}, retain=True)

    async def _drain(self, client: aiomqtt.Client) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush(client)

    async def _flush(self, client: aiomqtt.Client) -> None:
        while self.outbox:
            topic, body, retain = self.outbox[0]
            await client.publish(topic, body, qos=1, retain=retain)
            self.outbox.popleft()

    async def _test_call(self, phone: Phone) -> dict[str, Any]:
        """Call ``test_call``, talk ``test_call_s`` seconds, hang up, and answer with the call's quality."""
        loop = asyncio.get_running_loop()
        quality: asyncio.Future[dict[str, Any]] = loop.create_future()
        answered: asyncio.Future[None] = loop.create_future()
        call_id = -1

        def follow(event: dict[str, Any]) -> None:
            if event.get("event") == "call" and event.get("id") == call_id and not answered.done():
                if event.get("state") == "active":
                    answered.set_result(None)
                elif event.get("state") == "ended":
                    answered.set_exception(CommandError(f"the test call ended: {event.get('status_code')} {event.get('reason')}"))
            if event.get("event") == "call_quality" and event.get("call_id") == call_id and not quality.done():
                quality.set_result({k: v for k, v in event.items() if k not in ("event", "time")})

        unsubscribe = phone.subscribe(follow)
        try:
            call_id = phone.dial(self.config.test_call)
            try:
                await asyncio.wait_for(answered, 30)
            except asyncio.TimeoutError:
                phone.hangup(call_id)
                raise CommandError("the test call was not answered within 30 s") from None
            await asyncio.sleep(self.config.test_call_s)
            if phone.get_call(call_id) is not None:
                phone.hangup(call_id)
            try:
                return {"call": call_id, "number": self.config.test_call, "quality": await asyncio.wait_for(quality, 10)}
            except asyncio.TimeoutError:
                return {"call": call_id, "number": self.config.test_call, "quality": None}
        finally:
            unsubscribe()

    def discovery(self) -> dict[str, dict[str, Any]]:
        """Home Assistant MQTT discovery: the phone as a device with its sensors (and a test-call button)."""
        base = self.topic()
        device = {"identifiers": [f"firmware-app-{self.device}"], "name": self.device, "manufacturer": "firmware-app",
                  "model": "headset softphone", "sw_version": __version__}
        common = {"device": device, "availability_topic": f"{base}/online",
                  "availability_template": "{{ 'online' if value_json.online else 'offline' }}"}

        def entity(component: str, key: str, **fields: Any) -> tuple[str, dict[str, Any]]:
            topic = f"{self.config.discovery_prefix}/{component}/{self.device}/{key}/config"
            return topic, {"unique_id": f"firmware_app_{self.device}_{key}", "object_id": f"{self.device}_{key}",
                           **common, **fields}

        entities = [
            entity("sensor", "state", name="State", state_topic=f"{base}/state", value_template="{{ value_json.state }}"),
            entity("sensor", "registration", name="Registration", state_topic=f"{base}/state",
                   value_template="{{ value_json.registration }}"),
            entity("sensor", "last_call_mos", name="Last call quality (MOS)", state_topic=f"{base}/last_call",
                   value_template="{{ value_json.mos }}", state_class="measurement"),
            entity("binary_sensor", "headset", name="Headset connected", state_topic=f"{base}/state",
                   value_template="{{ 'ON' if value_json.headset else 'OFF' }}", device_class="connectivity"),
        ]
        if "test_call" in self.config.commands:
            entities.append(entity("button", "test_call", name="Test call", command_topic=f"{base}/cmd",
                                   payload_press=json.dumps({"id": "home-assistant-test-call", "command": "test_call"})))
        return dict(entities)

    # --- commands ---------------------------------------------------------------------------------------

    async def _command(self, message: aiomqtt.Message) -> None:
        if str(message.topic) != self.topic("cmd"):
            return  # the broker's ACL should not let it come: nothing for this device runs
        raw = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        command_id = None
        try:
            if len(raw) > MAX_COMMAND:
                raise CommandError(f"the command is longer than {MAX_COMMAND} bytes")
            try:
                request = json.loads(raw)
            except ValueError:
                raise CommandError("the command is not JSON") from None
            if not isinstance(request, dict) or not isinstance(request.get("id"), str) or not request["id"]:
                raise CommandError('expected {"id": "...", "command": "...", "argument": ...}')
            command_id = request["id"][:64]
            result = await self._run_command(str(request.get("command")), request.get("argument"))
            answer = {"id": command_id, "ok": True, "result": result}
        except CommandError as e:
            log.warning("telemetry: command %s refused: %s", command_id or "(no id)", e)
            answer = {"id": command_id, "ok": False, "error": str(e)}
        self.send(f"result/{command_id or 'invalid'}", answer)

    async def _run_command(self, command: str, argument: Any) -> Any:
        phone = self.phone
        assert phone is not None
        if command not in Command.__args__:  # type: ignore[attr-defined]
            raise CommandError(f"unknown command {command!r}")
        if command not in self.config.commands:
            raise CommandError(f"the command {command!r} is not allowed on this device ([telemetry] commands)")
        log.info("telemetry: remote command %s", command)
        if command == "dnd":
            return await phone.run_action(f"dnd:{argument}" if argument in ("on", "off") else "dnd")
        if command == "test_call":
            return await self._test_call(phone)
        if command == "restart":
            # The result goes out as the phone stops (the outbox is flushed before the clean disconnect).
            asyncio.get_running_loop().call_soon(phone.request_restart, "remote command restart")
            return {"restarting": True}
        if command == "reload_provisioning":
            return self._request_provisioning()
        if command == "doctor":
            return await self._doctor()
        raise CommandError(f"unknown command {command!r}")


    async def _doctor(self) -> dict[str, Any]:
        """``firmware-app doctor --json`` in a process of its own, as an operator would run it on the device.

        Not in the phone's process: doctor starts a PJSUA2 library of its own to list the sound devices, and
        one process holds one (a second would take the running phone down).
        """
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "firmware_app.cli", "-c", str(self.config_path), "doctor", "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), DOCTOR_TIMEOUT_S)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            raise CommandError(f"doctor gave no report within {DOCTOR_TIMEOUT_S:g} s") from None
        try:
            report = json.loads(out)
        except ValueError:
            reason = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {process.returncode}"]
            raise CommandError(f"doctor failed: {reason[0]}") from None
        return {"ok": report["ok"], "problems": report["problems"]}

    def _request_provisioning(self) -> dict[str, Any]:
        """Ask for the provisioning server's files now, as the hourly timer would (the phone itself is not root).

        The phone changes the time of a file in its runtime folder; firmware-provision-request.path starts
        firmware-provision-network.service, which installs changed settings and restarts the phone.
        """
        folder = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
        if not folder:
            raise CommandError("provisioning cannot be asked for here: the phone does not run as the service")
        request = Path(folder) / PROVISIONING_REQUEST
        try:
            request.write_text(f"{time.time():.3f}\n")
        except OSError as e:
            raise CommandError(f"provisioning cannot be asked for: {request}: {e.strerror or e}") from None
        return {"requested": True, "note": "the phone restarts if the provisioning server's files changed"}


def _image_version() -> str | None:
    try:
        return IMAGE_VERSION.read_text().strip() or None
    except OSError:
        return None  # not the A/B image


@functools.cache
def _quiet(client_class: type[aiomqtt.Client]) -> type[aiomqtt.Client]:
    """aiomqtt's client with paho's housekeeping every keepalive_s/6 instead of every second.

    Housekeeping only sends the keepalive PINGREQ and notices a missing PINGRESP; messages in and out, and a
    broker that closes the connection, are socket events either way. Once a second was the idle phone's only
    other wake-up (bench/README.md). aiomqtt 2 runs it in ``_misc_loop``; without that method (another
    aiomqtt), the stock client is used as it is.
    """
    if not hasattr(client_class, "_misc_loop"):
        return client_class

    class QuietClient(client_class):  # type: ignore[misc, valid-type]
        async def _misc_loop(self) -> None:
            period = max(1.0, self._client.keepalive / HOUSEKEEPING_SHARE)
            while self._client.loop_misc() == 0:  # MQTT_ERR_SUCCESS
                await asyncio.sleep(period)

    return QuietClient
