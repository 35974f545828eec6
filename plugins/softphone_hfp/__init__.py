"""Plugin: Bluetooth headsets for calls, as the HFP/HSP audio gateway's call logic beside bluez-alsa.

bluez-alsa (``bluealsa -p hfp-ag -p hsp-ag``) owns the profiles, the service-level connection, volume and
the SCO audio; the phone owns the call. This plugin follows headsets as bluealsa reports them on the system
bus (``org.bluealsa`` objects with ``org.bluealsa.RFCOMM1``), takes each one's RFCOMM channel with
``Open()`` and keeps it while the headset stays connected. On that channel it runs the call dialogue of
:mod:`softphone_hfp.dialogue`: the headset rings with the phone, its indicators follow the call wherever it
was answered or ended, and its call commands become button events of source ``hfp`` (``answer``,
``hangup``, ``redial``, ``voice_dial``, ``hsp_button``) that go through the button mapping like any other.

While a call is up and a headset is connected, the call's audio goes to the headset's SCO PCM (``pcm``, an
ALSA name the image defines over ``bluealsa:DEV=...,PROFILE=sco``), after the headset was told the call is
up; when the headset goes away mid-call the audio moves back to the ``[audio]`` devices and the call goes on.

```toml
[hfp]                          # the table's presence turns the plugin on
pcm = "bluetooth_headset"      # the ALSA PCM of the most recently connected headset (image/rootfs/etc/asound.conf)
take_over_calls = true         # a headset that connects during a call takes the call's audio
ring_interval_s = 1.0          # RING to the headset while a call rings
```
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from msgspec import Meta

from firmware_app import Phone, hookimpl
from firmware_app.config import Config
from firmware_app.errors import CommandError
from firmware_app.extras import import_extra
from firmware_app.inputs import Backoff
from firmware_app.model import ButtonEvent, Call, CallState, Gesture

from .dialogue import MAX_LINE, AgDialogue, HeadsetButton, Transport, VolumeKind

if TYPE_CHECKING:
    from dbus_fast.aio import MessageBus
    from dbus_fast.message import Message

log = logging.getLogger("firmware_app.hfp")

SOURCE = "hfp"
BLUEALSA = "org.bluealsa"
BLUEALSA_ROOT = "/org/bluealsa"  # where bluealsa 4.0.0's ObjectManager is ("/" has none)
RFCOMM = "org.bluealsa.RFCOMM1"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
#: HF feature bit 4 of AT+BRSF (HFP 1.7 4.34.1): the headset takes +VGS/+VGM from the gateway.
HF_REMOTE_VOLUME = 0x10
_ANSWERED = (CallState.CONNECTING, CallState.ACTIVE, CallState.HELD, CallState.TRANSFERRING)


class HfpConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    pcm: str = "bluetooth_headset"
    take_over_calls: bool = True
    ring_interval_s: Annotated[float, Meta(ge=0.5, le=10)] = 1.0
    #: How long after Open() a headset whose SLC was not seen is taken as connected (the phone started late).
    slc_wait_s: Annotated[float, Meta(ge=0.5, le=30)] = 3.0
    retry_first_s: Annotated[float, Meta(ge=0.05, le=60)] = 1.0
    retry_max_s: Annotated[float, Meta(ge=0.05, le=3600)] = 30.0


@dataclass(eq=False)
class Headset:
    """One connected headset: its RFCOMM object, the socket bluealsa lent, and the dialogue on it."""

    path: str
    address: str
    transport: Transport
    features: int
    sock: socket.socket
    dialogue: AgDialogue
    call_id: int | None = None  # the phone's call the headset is told about
    left_alone: int | None = None  # a call in progress when it connected, with take_over_calls off
    slc_timer: asyncio.TimerHandle | None = None

    @property
    def ready(self) -> bool:
        """The headset may be told of calls and take audio: HSP at once, HFP once its SLC is complete."""
        return self.transport is Transport.HSP or self.dialogue.indicators

    def describe(self) -> str:
        return f"{self.address} ({self.transport.value})"


def address_of(path: str) -> str:
    """``/org/bluealsa/hci0/dev_00_11_22_33_44_55/rfcomm`` -> ``00:11:22:33:44:55``."""
    for part in path.split("/"):
        if part.startswith("dev_"):
            return part[4:].replace("_", ":")
    return path


def number_of(uri: str) -> str | None:
    """What a headset shows of the other party: the user part of ``sip:1001@host`` (None when there is none)."""
    user = uri.strip().strip("<>").partition(":")[2].partition("@")[0].partition(";")[0]
    return user or None


class HfpPlugin:
    def __init__(self) -> None:
        self.config = HfpConfig()
        self.enabled = False
        self.phone: Phone | None = None
        self.headsets: dict[str, Headset] = {}
        self.routed = False  # the calls' audio is on the headset's PCM
        self._route_failed: bool | None = None  # the route last refused (to the headset: True), said once
        self._bus: MessageBus | None = None
        self._task: asyncio.Task[None] | None = None
        self._opening: set[str] = set()
        self._busy: set[str] = set()  # RFCOMM objects another program holds (said once each)
        self._bluealsa_up: bool | None = None
        self._unsubscribe: Any = None

    # --- lifecycle --------------------------------------------------------------------------------------

    @hookimpl
    def softphone_configure(self, config: Config) -> None:
        present = "hfp" in config.raw
        self.config = config.convert(config.section("hfp"), HfpConfig, "hfp")
        for button in HeadsetButton:
            config.declare_control(SOURCE, button.value)
        if present:
            self.enabled = import_extra(
                log, "softphone_hfp", "hfp", ("dbus_fast",), "the phone runs without its Bluetooth headsets"
            )

    @hookimpl
    def softphone_startup(self, phone: Phone) -> None:
        if not self.enabled:
            return
        self.phone = phone
        self._unsubscribe = phone.subscribe(self._on_event)
        self._task = phone.spawn(self._follow())
        self._publish()

    @hookimpl
    def softphone_shutdown(self, phone: Phone) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._unsubscribe is not None:
            self._unsubscribe()
        for headset in list(self.headsets.values()):
            self._drop(headset, "the phone stops")
        if self._bus is not None:
            self._bus.disconnect()

    # --- the phone's calls -> the headsets ----------------------------------------------------------------

    @hookimpl
    def softphone_call_state_changed(self, call: Call, previous: CallState | None) -> None:
        if self.enabled:
            self._sync()

    def _headset_call(self, current: int | None) -> Call | None:
        """The call a headset is told of: the one it knows while it lasts, else the ringing one, else the first."""
        assert self.phone is not None
        calls = self.phone.calls()
        for call in calls:
            if call.id == current:
                return call
        ringing = [c for c in calls if c.state is CallState.RINGING]
        return (ringing or calls or [None])[0]

    def _sync(self) -> None:
        """Tell every ready headset where the phone's call stands, then put the call's audio where it belongs."""
        for headset in self.headsets.values():
            if headset.ready:
                self._tell(headset)
        self._route()
        self._publish()

    def _tell(self, headset: Headset) -> None:
        dialogue = headset.dialogue
        call = self._headset_call(headset.call_id)
        if call is not None and call.id == headset.left_alone:
            call = None
        if call is None or call.id != headset.call_id:
            dialogue.ended()
            headset.call_id = None
        if call is None:
            return
        headset.call_id = call.id
        if call.state is CallState.RINGING:
            dialogue.incoming(number_of(call.remote_uri))
        elif call.state is CallState.DIALING:
            dialogue.dialing(number_of(call.remote_uri))
            if call.status_code in (180, 183):
                dialogue.alerting()
        elif call.state in _ANSWERED:
            dialogue.answered()

    def _route(self) -> None:
        """The headset's PCM while a call is up and a headset knows it; the ``[audio]`` devices otherwise.

        Between calls the route goes back, so the next call's audio opens on the headset only after the
        headset was told the call is up (many headsets take no SCO audio without a call)."""
        phone = self.phone
        assert phone is not None
        in_call = any(c.state in _ANSWERED for c in phone.calls())
        wanted = in_call and any(h.ready and h.call_id is not None for h in self.headsets.values())
        if not in_call and self._route_failed:
            self._route_failed = None  # the next call tries again
        if wanted == self.routed or (wanted and self._route_failed):
            return  # a route that failed is tried again when a headset comes or goes, or at the next call
        try:
            devices = phone.route_audio(self.config.pcm if wanted else None)
        except CommandError as e:
            if self._route_failed != wanted:  # said once, not at every call state change
                where = f"the headset's PCM {self.config.pcm!r}" if wanted else "the configured devices"
                log.warning("hfp: cannot move the call audio to %s: %s", where, e)
                self._route_failed = wanted
            if wanted:
                return
        else:
            log.info("hfp: call audio on %s", " / ".join(d or "null" for d in devices))
            self._route_failed = None
        self.routed = wanted
        self._publish()

    # --- the headsets' commands -> the phone -------------------------------------------------------------

    def _button(self, headset: Headset, button: HeadsetButton) -> bool | None:
        """A call command from a headset: an input event when the mapping gives it an action, else ERROR."""
        phone = self.phone
        assert phone is not None
        event = ButtonEvent(SOURCE, button.value, Gesture.SINGLE)
        mapped = phone.map_input(event) is not None
        phone.input(event)  # runs after this returns: the headset hears OK before the indicators it causes
        return None if mapped else False

    def _dial(self, headset: Headset, number: str) -> bool | None:
        assert self.phone is not None
        try:
            self.phone.dial(number)
        except CommandError as e:
            log.warning("hfp: %s dials %s: %s", headset.describe(), number, e)
            return False
        return None

    def _volume(self, headset: Headset, kind: VolumeKind, level: int) -> None:
        """The headset's own volume keys (its AT+VGS/AT+VGM, which bluealsa answered): shown as the volume."""
        assert self.phone is not None
        percent = round(level * 100 / 15)
        if kind is VolumeKind.SPEAKER:
            self.phone.emit("volume", source=SOURCE, device=headset.address, level=percent, muted=False, at_limit=False)
        else:
            self.phone.emit("mic_gain", source=SOURCE, device=headset.address, level=percent)
        self._publish()

    def _on_event(self, event: dict[str, Any]) -> None:
        """The phone's own volume and microphone mute, sent on to headsets that take them (HF feature bit 4)."""
        kind = event.get("event")
        if event.get("source") == SOURCE or kind not in ("volume", "mic_mute"):
            return
        for headset in self.headsets.values():
            if not headset.ready or not (headset.dialogue.features or headset.features) & HF_REMOTE_VOLUME:
                continue
            if kind == "volume" and isinstance(event.get("level"), int):
                level = 0 if event.get("muted") else round(event["level"] * 15 / 100)
                headset.dialogue.set_volume(VolumeKind.SPEAKER, level)
            elif kind == "mic_mute":
                level = 0 if event.get("muted") else headset.dialogue.volume.get(VolumeKind.MICROPHONE, 15) or 15
                headset.dialogue.set_volume(VolumeKind.MICROPHONE, level)

    # --- following bluealsa on the system bus ------------------------------------------------------------

    async def _follow(self) -> None:
        """Connect to the system bus, follow bluealsa's headsets; after losing the bus, connect again."""
        from dbus_fast import BusType, Message
        from dbus_fast.aio import MessageBus

        backoff = Backoff(self.config.retry_first_s, self.config.retry_max_s)
        said_down = False
        while True:
            try:
                bus = await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()
            except Exception as e:  # OSError, and dbus-fast's own errors (authentication, a closed bus)
                delay = backoff.next()
                if not said_down:
                    log.warning("hfp: the system D-Bus is not reachable (%s); Bluetooth headsets wait for it", e)
                    said_down = True
                else:
                    log.debug("hfp: the system D-Bus is still not reachable; next try in %.1f s", delay)
                await asyncio.sleep(delay)
                continue
            if said_down:
                log.info("hfp: the system D-Bus is back")
                said_down = False
            backoff.reset()
            self._bus = bus
            bus.add_message_handler(self._on_message)
            for rule in (
                f"type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='{BLUEALSA}'",
                f"type='signal',sender='{BLUEALSA}',interface='{OBJECT_MANAGER}'",
            ):
                await bus.call(
                    Message(
                        destination="org.freedesktop.DBus",
                        path="/org/freedesktop/DBus",
                        interface="org.freedesktop.DBus",
                        member="AddMatch",
                        signature="s",
                        body=[rule],
                    )
                )
            await self._scan()
            await bus.wait_for_disconnect()
            self._bus = None
            log.warning("hfp: lost the system D-Bus; calls go on, Bluetooth headsets wait for it")
            self._bluealsa_gone()
            said_down = True
            await asyncio.sleep(backoff.next())

    async def _scan(self) -> None:
        """Every headset bluealsa has now (at start, and when bluealsa has (re)started)."""
        from dbus_fast import Message, MessageType

        bus = self._bus
        if bus is None:
            return
        reply = await bus.call(
            Message(destination=BLUEALSA, path=BLUEALSA_ROOT, interface=OBJECT_MANAGER, member="GetManagedObjects")
        )
        if reply is None or reply.message_type is MessageType.ERROR:
            self._set_bluealsa(False)
            return
        self._set_bluealsa(True)
        for path, interfaces in reply.body[0].items():
            if RFCOMM in interfaces:
                self._headset_appeared(path, interfaces[RFCOMM])

    def _set_bluealsa(self, up: bool) -> None:
        if up == self._bluealsa_up:
            return
        first = self._bluealsa_up is None
        self._bluealsa_up = up
        if up:
            log.info("hfp: bluealsa is running; following its headsets")
        elif first:
            log.warning("hfp: bluealsa is not running (org.bluealsa is not on the system bus); headsets wait for it")
        else:
            log.warning("hfp: bluealsa stopped; calls go on without the Bluetooth headsets until it is back")
        self._publish()

    def _bluealsa_gone(self) -> None:
        for headset in list(self.headsets.values()):
            self._drop(headset, "bluealsa went away")
        self._set_bluealsa(False)

    def _on_message(self, message: Message) -> None:
        if message.member == "NameOwnerChanged" and message.body[:1] == [BLUEALSA]:
            if message.body[2]:
                assert self.phone is not None
                self.phone.spawn(self._scan())
            else:
                self._bluealsa_gone()
        elif message.interface == OBJECT_MANAGER and message.member == "InterfacesAdded":
            path, interfaces = message.body
            if RFCOMM in interfaces:
                self._headset_appeared(path, interfaces[RFCOMM])
        elif message.interface == OBJECT_MANAGER and message.member == "InterfacesRemoved":
            path, interfaces = message.body
            if RFCOMM in interfaces:
                self._busy.discard(path)
                if (headset := self.headsets.get(path)) is not None:
                    self._drop(headset, "it disconnected")

    def _headset_appeared(self, path: str, properties: dict[str, Any]) -> None:
        if path in self.headsets or path in self._opening:
            return
        assert self.phone is not None
        self._opening.add(path)
        self.phone.spawn(self._open(path, properties))

    async def _open(self, path: str, properties: dict[str, Any]) -> None:
        """Take the headset's RFCOMM channel; a channel another program holds is said once and retried."""
        from dbus_fast import Message, MessageType

        backoff = Backoff(self.config.retry_first_s, self.config.retry_max_s)
        try:
            while self._bus is not None:
                reply = await self._bus.call(Message(destination=BLUEALSA, path=path, interface=RFCOMM, member="Open"))
                if reply is None:
                    return
                if reply.message_type is not MessageType.ERROR:
                    fds = list(reply.unix_fds)
                    fd = fds.pop(reply.body[0]) if reply.body and reply.body[0] < len(reply.unix_fds) else None
                    for extra in fds:  # nothing else is expected; never keep a copy that would hold the slot
                        _close_fd(extra)
                    if fd is None:
                        log.error("hfp: bluealsa's Open() for %s returned no file descriptor", address_of(path))
                        return
                    self._busy.discard(path)
                    self._attach(path, properties, fd)
                    return
                error = " ".join(str(x) for x in reply.body) or reply.error_name or "refused"
                if not _is_busy(error):
                    log.warning("hfp: cannot take the RFCOMM channel of %s: %s", address_of(path), error)
                    return
                if path not in self._busy:
                    self._busy.add(path)
                    log.warning(
                        "hfp: another program holds the RFCOMM channel of headset %s (%s); "
                        "its calls are not the phone's until it lets go (retrying)", address_of(path), error
                    )
                await asyncio.sleep(backoff.next())
                if path not in self._busy:  # InterfacesRemoved cleared it: the headset left meanwhile
                    return
        finally:
            self._opening.discard(path)

    def _attach(self, path: str, properties: dict[str, Any], fd: int) -> None:
        phone = self.phone
        assert phone is not None
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        transport = Transport(_value(properties.get("Transport"), "HFP-AG"))
        headset: Headset
        dialogue = AgDialogue(
            transport,
            lambda frame: self._send(headset, frame),
            lambda button: self._button(headset, button),
            schedule=phone.call_later,
            on_volume=lambda kind, level: self._volume(headset, kind, level),
            on_dial=lambda number: self._dial(headset, number),
            ring_interval=self.config.ring_interval_s,
            logger=log,
        )
        headset = Headset(path, address_of(path), transport, int(_value(properties.get("Features"), 0)), sock, dialogue)
        self.headsets[path] = headset
        self._route_failed = None
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable, headset)
        if transport is Transport.HFP:
            headset.slc_timer = phone.call_later(self.config.slc_wait_s, self._slc_assumed, headset)
        log.info("hfp: headset %s connected; the phone holds its RFCOMM channel", headset.describe())
        phone.emit("input_device", source=SOURCE, device=headset.address, state="connected", transport=transport.value)
        self._publish()
        self._ready_changed(headset, was_ready=False)

    def _slc_assumed(self, headset: Headset) -> None:
        """No AT+CMER seen: the SLC was complete before the phone held the channel (the phone or bluealsa restarted)."""
        headset.slc_timer = None
        if self.headsets.get(headset.path) is headset and not headset.ready:
            headset.dialogue.slc_ready()
            self._ready_changed(headset, was_ready=False)

    def _ready_changed(self, headset: Headset, *, was_ready: bool) -> None:
        if was_ready or not headset.ready:
            return
        self._publish()
        if headset.slc_timer is not None:
            headset.slc_timer.cancel()
            headset.slc_timer = None
        assert self.phone is not None
        in_call = [c for c in self.phone.calls() if c.state in _ANSWERED]
        if in_call and not self.config.take_over_calls:
            headset.left_alone = in_call[0].id
            log.info("hfp: headset %s connected during a call; the call stays where it is (take_over_calls)", headset.describe())
        self._sync()

    def _readable(self, headset: Headset) -> None:
        try:
            message = headset.sock.recv(MAX_LINE * 4)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._drop(headset, f"its channel failed: {e.strerror or e}")
            return
        if not message:
            self._drop(headset, "bluealsa closed its channel")
            return
        was_ready = headset.ready
        headset.dialogue.received(message)
        self._ready_changed(headset, was_ready=was_ready)

    def _send(self, headset: Headset, frame: bytes) -> None:
        try:
            headset.sock.send(frame)
        except BlockingIOError:
            log.warning("hfp: headset %s does not take what the phone sends; dropped %r", headset.describe(), frame)
        except OSError as e:
            assert self.phone is not None
            self.phone.call_soon(self._drop, headset, f"its channel failed: {e.strerror or e}")

    def _drop(self, headset: Headset, why: str) -> None:
        """The headset is gone (or the phone stops): close its channel; the call goes on without it."""
        if self.headsets.get(headset.path) is not headset:
            return
        del self.headsets[headset.path]
        self._route_failed = None
        headset.dialogue.close()
        if headset.slc_timer is not None:
            headset.slc_timer.cancel()
        try:
            asyncio.get_running_loop().remove_reader(headset.sock.fileno())
        except (RuntimeError, ValueError):
            pass
        headset.sock.close()
        log.info("hfp: headset %s is gone: %s", headset.describe(), why)
        if self.phone is not None:
            self.phone.emit("input_device", source=SOURCE, device=headset.address, state="disconnected")
            self._route()
            self._publish()

    def _publish(self) -> None:
        if self.phone is None:
            return
        self.phone.publish_status(
            "hfp",
            {
                "bluealsa": bool(self._bluealsa_up),
                "audio_on_headset": self.routed,
                "headsets": [
                    {
                        "address": h.address,
                        "transport": h.transport.value,
                        "ready": h.ready,
                        "call": h.dialogue.phase.value,
                        "volume": {k.value: v for k, v in h.dialogue.volume.items()},
                    }
                    for h in self.headsets.values()
                ],
            },
        )


def _value(value: Any, default: Any) -> Any:
    """A property from GetManagedObjects/InterfacesAdded: dbus-fast hands them as Variants."""
    return getattr(value, "value", value) if value is not None else default


def _is_busy(error: str) -> bool:
    return "busy" in error.lower() or errno.errorcode.get(errno.EBUSY, "EBUSY") in error


def _close_fd(fd: int) -> None:
    import os

    try:
        os.close(fd)
    except OSError:
        pass
