"""Plugin: USB headsets' call controls through HID telephony (hidraw), with the headset's LEDs in step.

A USB headset's audio is ALSA's and its volume keys reach evdev, but Linux drops its call controls: the
Telephony page's Hook Switch, Flash and Redial and the LED page's Off-Hook, Ring and Hold have no key or LED
code. This plugin reads them from the headset's telephony hidraw node, found by its report descriptor
(:mod:`softphone_usb_headset.hid`), and mirrors the call back the way desk phones do: Off-Hook for the
whole call, Ring (and the Ringer) while a call rings, Hold, and Mute/Microphone with the phone's mic mute.

The controls become button events of source ``usb_headset``: ``hook_switch`` (a latching hook is a level:
lifted answers, put back hangs up; a momentary call button presses like the main button), ``mute`` (the
phone's mic mute, from the headset's Phone Mute), ``flash`` (hold by default; map it to ``transfer:NAME``)
and ``redial``. They go through the same mapping as every other control.

```toml
[usb_headset]          # the table's presence turns the plugin on
match = ""             # a USB ID ("0b0e:245e"), a part of the name ("Jabra") or a path; "" = the first one
hook_echo_ms = 500     # hook reports right after the phone changed Off-Hook are the headset's echo: ignored
```
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from firmware_app import Phone, hookimpl
from firmware_app.config import Config
from firmware_app.gestures import ControlKind, Timing
from firmware_app.inputs import DeviceStatus, InputControl
from firmware_app.model import ButtonEvent, Call, CallState, Gesture, PhoneState

from .devices import HidrawDevices, HidrawNode, SysfsHidraw
from .hid import POLY_VENDOR_PAGE, Control, DescriptorError, NotTelephonyError, OutputState, TelephonyHeadset, describe

log = logging.getLogger("firmware_app.usb_headset")

SOURCE = "usb_headset"
#: The headset's controls the phone acts on, by usage name, and the control names the mapping sees.
CONTROLS = {
    "hook_switch": "hook_switch", "phone_mute": "mute", "flash": "flash", "redial": "redial",
    **{f"key_{k}": f"key_{k}" for k in [*map(str, range(10)), "star", "pound"]},  # the keypad: DTMF in a call
}  # fmt: skip
_OFF_HOOK = (CallState.DIALING, CallState.CONNECTING, CallState.ACTIVE, CallState.HELD, CallState.TRANSFERRING)
#: More input reports than this in a second is a flood: reading pauses for a second.
FLOOD_PER_S = 200
#: Where tests put their stand-in for the machine's hidraw nodes (see tests/plugins/hidraw_socket.py).
default_devices: Any = SysfsHidraw


class UsbHeadsetConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    match: str = ""
    hook_echo_ms: Annotated[int, Meta(ge=0, le=5000)] = 500
    mute_duplicate_ms: Annotated[int, Meta(ge=0, le=2000)] = 400  # the kernel's KEY_MICMUTE of the same press
    rescan_s: Annotated[float, Meta(ge=0.1, le=60)] = 2.0
    long_press_ms: Annotated[int, Meta(ge=100, le=10_000)] = 800
    double_press_ms: Annotated[int, Meta(ge=50, le=2_000)] = 400


class _Open:
    """The headset the phone holds now: its node, descriptor, file and what was last written to it."""

    def __init__(self, node: HidrawNode, headset: TelephonyHeadset, fd: int) -> None:
        self.node, self.headset, self.fd = node, headset, fd
        self.closed = asyncio.Event()
        self.values: dict[str, int] = {}  # the last value of each control read
        self.written: OutputState | None = None
        self.echo: tuple[int, float] | None = None  # the hook value expected back, until when (monotonic)
        self.logged: set[str] = set()
        self.window_start, self.window_reports = 0.0, 0


class UsbHeadsetPlugin:
    def __init__(self, devices: HidrawDevices | None = None) -> None:
        self._devices = devices
        self.config = UsbHeadsetConfig()
        self.enabled = False
        self.phone: Phone | None = None
        self.open: _Open | None = None
        self.controls: dict[str, InputControl] = {}
        self.status: DeviceStatus | None = None
        self._task: asyncio.Task[None] | None = None
        self._said: set[str] = set()  # nodes already said not to be telephony headsets
        self._hid_mute_at = -1e9
        self._evdev_mute_at = -1e9
        self._unsubscribe: Any = None

    @property
    def devices(self) -> HidrawDevices:
        if self._devices is None:
            self._devices = default_devices()
        return self._devices

    # --- lifecycle --------------------------------------------------------------------------------------

    @hookimpl
    def softphone_configure(self, config: Config) -> None:
        self.enabled = "usb_headset" in config.raw
        self.config = config.convert(config.section("usb_headset"), UsbHeadsetConfig, "usb_headset")
        for name in CONTROLS.values():
            config.declare_control(SOURCE, name)

    @hookimpl
    def softphone_startup(self, phone: Phone) -> None:
        if not self.enabled:
            return
        self.phone = phone
        self.status = DeviceStatus(log, SOURCE, self.config.match or "headset", phone)
        self._unsubscribe = phone.subscribe(self._on_event)
        self._task = phone.spawn(self._run())

    @hookimpl
    def softphone_shutdown(self, phone: Phone) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self.open is not None:
            self._write(OutputState())  # the headset shows no call after the phone has gone
            self._close("the phone stops")
        for control in self.controls.values():
            control.close()
        self.phone = None

    @hookimpl
    def softphone_doctor(self, config: Config) -> dict[str, Any]:
        """Every hidraw node, telephony or not, with the controls of its telephony side."""
        nodes = self.devices.scan()
        lines, problems, data = [], [], []
        for node in nodes:
            lines.append(f"{node.path} {node.name} ({node.usb_id}): {describe(node.descriptor)}")
            data.append({"path": node.path, "name": node.name, "usb_id": node.usb_id, "telephony": node.telephony(),
                         "description": describe(node.descriptor)})
        if not nodes:
            lines.append("no hidraw nodes (no USB headset plugged in, or no HID support)")
        if self.enabled:
            chosen = next((n for n in nodes if n.matches(self.config.match) and n.telephony()), None)
            wanted = f" matching {self.config.match!r}" if self.config.match else ""
            if chosen is None:
                problems.append(f"usb_headset: no USB headset with a telephony interface{wanted}")
            elif not os.access(chosen.path, os.R_OK | os.W_OK):
                problems.append(
                    f"usb_headset: {chosen.path} ({chosen.name}) cannot be opened by this user: the udev rule "
                    "60-firmware-app-hid-telephony.rules gives it to group firmware-app"
                )
            else:
                lines.append(f"the phone uses {chosen.path}")
        return {"name": "usb_headset", "lines": lines, "problems": problems, "data": {"nodes": data}}

    # --- finding and holding the headset -----------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            found = self._find()
            if found is None:
                assert self.status is not None
                wanted = f" matching {self.config.match!r}" if self.config.match else ""
                self.status.set("missing", f"no USB headset with a telephony interface{wanted}; looking every {self.config.rescan_s:g} s")
                await asyncio.sleep(self.config.rescan_s)
                continue
            node, headset = found
            try:
                fd = self.devices.open(node)
            except OSError as e:
                assert self.status is not None
                hint = " (is the service's user allowed to open hidraw nodes? see the udev rule)" if e.errno == errno.EACCES else ""
                self.status.set("unusable", f"{node.path}: {os.strerror(e.errno or 0) or e}{hint}", level=logging.WARNING)
                await asyncio.sleep(self.config.rescan_s)
                continue
            self._hold(node, headset, fd)
            assert self.open is not None
            await self.open.closed.wait()
            await asyncio.sleep(0.2)  # a headset that re-enumerates needs a moment before its node is back

    def _find(self) -> tuple[HidrawNode, TelephonyHeadset] | None:
        for node in self.devices.scan():
            if not node.matches(self.config.match):
                continue
            try:
                return node, node.headset()
            except (DescriptorError, NotTelephonyError) as e:
                self._not_telephony(node, e)
        return None

    def _not_telephony(self, node: HidrawNode, error: Exception) -> None:
        """Said once per node: when it was asked for by ``match``, or when it is an old Poly (vendor page)."""
        if node.path in self._said:
            return
        self._said.add(node.path)
        vendor_page = isinstance(error, NotTelephonyError) and f"0x{POLY_VENDOR_PAGE:04X}" in str(error)
        level = logging.WARNING if self.config.match or vendor_page else logging.DEBUG
        log.log(level, "usb_headset: %s (%s, %s) is not usable for calls: %s", node.path, node.name, node.usb_id, error)

    def _hold(self, node: HidrawNode, headset: TelephonyHeadset, fd: int) -> None:
        phone = self.phone
        assert phone is not None and self.status is not None
        self.open = held = _Open(node, headset, fd)
        for control in headset.inputs:
            name = CONTROLS.get(control.name)
            if name is not None and name not in self.controls:
                self.controls[name] = self._input_control(name, control)
        asyncio.get_running_loop().add_reader(fd, self._readable, held)
        self.status.set("connected", f"{node.name} ({node.usb_id}) at {node.path}: {headset.describe()}", path=node.path)
        self._sync()

    def _input_control(self, name: str, control: Control) -> InputControl:
        assert self.phone is not None
        timing = Timing(self.config.long_press_ms / 1000, self.config.double_press_ms / 1000, min_press=0.0)
        if name == "hook_switch" and control.absolute:
            return InputControl(self.phone, SOURCE, name, ControlKind.LEVEL, timing)
        return InputControl(self.phone, SOURCE, name, ControlKind.BUTTON, timing)

    def _close(self, why: str) -> None:
        held, self.open = self.open, None
        if held is None:
            return
        try:
            asyncio.get_running_loop().remove_reader(held.fd)
        except (RuntimeError, ValueError):
            pass
        try:
            os.close(held.fd)
        except OSError:
            pass
        for control in self.controls.values():
            control.abort()
        self.controls.clear()  # the next headset may report differently (absolute or relative hook)
        held.closed.set()
        if self.status is not None:
            level = logging.INFO if why == "the phone stops" else logging.WARNING
            self.status.set("disconnected", f"{held.node.path}: {why}", level=level)

    # --- the headset's reports -> the phone ----------------------------------------------------------------

    def _readable(self, held: _Open) -> None:
        try:
            report = os.read(held.fd, 16384)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._close("unplugged" if e.errno == errno.ENODEV else f"read failed: {os.strerror(e.errno or 0)}")
            return
        if not report:
            self._close("unplugged")
            return
        if self._flooding(held):
            return
        result = held.headset.decode(report)
        if result.ignored:
            self._once(held, result.ignored.split(" has ")[0], f"ignored a report: {result.ignored}")
            return
        if result.extra_bytes:
            self._once(held, "long", "its reports are longer than its descriptor says; the extra bytes are ignored")
        for usage_name, value in result.values.items():
            name = CONTROLS.get(usage_name)
            if name is not None:
                self._control(held, name, held.headset.control(usage_name), value)

    def _control(self, held: _Open, name: str, control: Control | None, value: int) -> None:
        """One control's value in a report: a state (absolute: act on changes) or an event (relative: each 1)."""
        previous = held.values.get(name, 0)
        held.values[name] = value
        relative = control is not None and control.relative
        recognizer = self.controls.get(name)
        if recognizer is None or (relative and not value) or (not relative and value == previous and held.echo is None):
            return  # nothing happened to this control (the report was about another one)
        if name == "hook_switch" and not relative:  # a latching hook: lifted (1) or put back (0)
            if held.echo is not None and time.monotonic() < held.echo[1]:
                # The headset following the phone's own Off-Hook: its echo, and any stale report before it.
                if value == held.echo[0]:
                    held.echo = None
                log.debug("usb_headset: hook %s follows the phone's Off-Hook: not the user's", value)
                return
            held.echo = None
            recognizer.gesture(Gesture.DOWN if value else Gesture.UP)  # a report is a clean change: no settling
            return
        if name == "mute":
            self._hid_mute_at = time.monotonic()
            if self._hid_mute_at - self._evdev_mute_at < self.config.mute_duplicate_ms / 1000:
                return  # the kernel's KEY_MICMUTE of this press came first and was acted on
        if relative or name == "mute":  # a toggle, or a latching mute that changed: one press
            recognizer.edge(True)
            recognizer.edge(False)
        else:
            recognizer.edge(bool(value))  # a momentary button, pressed while 1

    def _flooding(self, held: _Open) -> bool:
        now = time.monotonic()
        if now - held.window_start >= 1.0:
            held.window_start, held.window_reports = now, 0
        held.window_reports += 1
        if held.window_reports <= FLOOD_PER_S:
            return False
        if held.window_reports == FLOOD_PER_S + 1:
            self._once(held, "flood", f"sends more than {FLOOD_PER_S} reports a second; the rest of each second is dropped")
        return True

    def _once(self, held: _Open, key: str, message: str) -> None:
        if key not in held.logged:
            held.logged.add(key)
            log.warning("usb_headset: %s (%s) %s", held.node.name, held.node.path, message)

    @hookimpl(tryfirst=True)
    def softphone_map_input(self, event: ButtonEvent, state: PhoneState) -> str | None:
        """The kernel also turns the headset's Phone Mute into KEY_MICMUTE (source ``headset``): one press, one toggle."""
        if self.open is None or event.source != "headset" or event.button != "mute":
            return None
        self._evdev_mute_at = now = time.monotonic()
        if now - self._hid_mute_at < self.config.mute_duplicate_ms / 1000:
            log.debug("usb_headset: KEY_MICMUTE duplicates the headset's own Phone Mute; ignored")
            return ""  # taken: nothing to do
        return None

    # --- the phone's calls -> the headset's indicators -------------------------------------------------------

    @hookimpl
    def softphone_call_state_changed(self, call: Call, previous: CallState | None) -> None:
        self._sync()

    @hookimpl
    def softphone_phone_state_changed(self, state: PhoneState, previous: PhoneState) -> None:
        self._sync()

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("event") in ("mic_mute", "call"):
            self._sync()

    def _wanted(self) -> OutputState:
        assert self.phone is not None
        calls = self.phone.calls()
        current = next((c for c in calls if c.state in (CallState.ACTIVE, CallState.TRANSFERRING)), None)
        return OutputState(
            off_hook=any(c.state in _OFF_HOOK for c in calls),
            ring=self.phone.state in (PhoneState.RINGING, PhoneState.WAITING),
            hold=any(c.state is CallState.HELD for c in calls),
            mute=any(c.mic_muted for c in calls if c.state in _OFF_HOOK) if current is None else current.mic_muted,
        )

    def _sync(self) -> None:
        if self.open is None or self.phone is None:
            return
        wanted = self._wanted()
        if wanted != self.open.written:
            self._write(wanted)

    def _write(self, wanted: OutputState) -> None:
        held = self.open
        if held is None:
            return
        off_hook = int(wanted.off_hook)
        changed = held.written is None or held.written.off_hook != wanted.off_hook
        if changed and held.values.get("hook_switch", 0) != off_hook and self.config.hook_echo_ms:
            # The headset takes the host's hook state and reports it back: for a moment, until that echo
            # (or the window's end), its hook reports are not the user's. When the user's own hook caused
            # the change, the headset is in that state already and nothing is waited for.
            held.echo = (off_hook, time.monotonic() + self.config.hook_echo_ms / 1000)
        held.written = wanted
        for report in held.headset.output_reports(wanted).values():
            try:
                os.write(held.fd, report)
            except BlockingIOError:
                self._once(held, "write-busy", "does not take output reports fast enough; its LEDs may lag")
            except OSError as e:
                if self.phone is not None:
                    self.phone.call_soon(self._close, "unplugged" if e.errno == errno.ENODEV else f"write failed: {os.strerror(e.errno or 0)}")
                return
