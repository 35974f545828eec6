"""Built-in plugin: the call actions every control maps to (answer, reject, hang up, hold, dial, redial).

With call waiting (``[calls] call_waiting``, on by default) a second call rings while the first is up:
``answer`` holds the first and answers it, ``reject`` refuses it, ``hangup`` ends the call in progress (the
waiting one goes on ringing), ``swap`` (or ``hold_toggle``) changes between a call in progress and a held
one, ``hangup`` with one call left on hold goes back to it, and ``conference`` joins the two.
``dtmf:1234#`` sends DTMF digits in the call in progress (RFC 4733, or SIP INFO when the far end offered no
telephone-event); a USB headset's keypad sends its digits the same way.

``call:NAME`` calls a speed-dial entry of ``[speed_dial]`` by its name, or else the number or SIP URI it is
given (``call:1003``, ``call:sip:alice@pbx.example``). ``redial`` calls the last number called from this
phone, however it was dialled (a button, the CLI, a Bluetooth headset's ATD); the phone forgets it when it
restarts.

```toml
[speed_dial]
reception = "1003"
support = "sip:support@pbx.example.com"

[buttons.controls.main.idle]
long = "call:reception"
```

Do not disturb: ``dnd`` toggles it (``dnd:on``, ``dnd:off``), from a button or ``firmware-app action dnd``.
While it is on, calls are refused with ``code`` before anything rings; a call in progress goes on. It is
kept across restarts unless ``remember = false``. ``firmware-app status`` shows it under ``dnd``, the event
stream has a ``dnd`` event at each change, and the GPIO status LED shows it while idle.

```toml
[dnd]
code = 486           # 486 Busy Here, 480 Temporarily Unavailable or 603 Decline
remember = true
state_file = ""      # "" = $STATE_DIRECTORY/dnd.json, else /var/lib/firmware-app/dnd.json
```
"""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

import msgspec

from firmware_app import Phone, hookimpl
from firmware_app.config import Config
from firmware_app.errors import CommandError, ConfigError
from firmware_app.hookspecs import RegisterAction
from firmware_app.model import Call, CallState, Direction, Refusal
from firmware_app.state import load_state, save_state, state_dir

log = logging.getLogger("firmware_app.calls")

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,39}")


async def answer(phone: Phone, argument: str | None) -> int:
    """Answer the ringing call; a call in progress is put on hold first (call waiting)."""
    ringing = phone.current_call(CallState.RINGING)
    for call in phone.calls():
        if call.state is CallState.ACTIVE and not await phone.hold(call.id):
            raise CommandError(f"call {call.id} did not go on hold: the waiting call is not answered")
    return phone.answer(ringing.id).id


def reject(phone: Phone, argument: str | None) -> int:
    return phone.reject(code=int(argument) if argument else None).id


def hangup(phone: Phone, argument: str | None) -> int:
    """End the call in progress; when the one call left is on hold, go back to it (as a desk phone does)."""
    ended = phone.hangup()
    others = [c for c in phone.calls() if c.id != ended.id]
    if ended.state is not CallState.RINGING and len(others) == 1 and others[0].state is CallState.HELD:
        phone.resume(others[0].id)
    return ended.id


async def swap(phone: Phone, argument: str | None) -> int:
    """Put the call in progress on hold and take the held one back; the id of the call now in progress."""
    active = [c for c in phone.calls() if c.state is CallState.ACTIVE]
    held = [c for c in phone.calls() if c.state is CallState.HELD]
    if not active or not held:
        raise CommandError("swap needs a call in progress and one on hold")
    if not await phone.hold(active[0].id):
        raise CommandError("the far end did not confirm the hold")
    return phone.resume(held[0].id).id


def dtmf(phone: Phone, argument: str | None) -> str:
    """``dtmf:1234#``: send the digits in the call in progress (an IVR's menu, a PIN)."""
    if not argument:
        raise CommandError("dtmf needs digits: dtmf:1234#")
    return phone.send_dtmf(argument)


def conference(phone: Phone, argument: str | None) -> list[int]:
    return [c.id for c in phone.conference()]


async def hold(phone: Phone, argument: str | None) -> bool:
    if not await phone.hold():
        raise CommandError("the far end did not confirm the hold")
    return True


def resume(phone: Phone, argument: str | None) -> int:
    return phone.resume(None).id


async def hold_toggle(phone: Phone, argument: str | None) -> object:
    """Hold or resume the call; with a call in progress and one on hold, swap them."""
    states = {c.state for c in phone.calls()}
    if CallState.ACTIVE in states and CallState.HELD in states:
        return await swap(phone, None)
    call = phone.current_call(CallState.ACTIVE, CallState.HELD)
    if call.state is CallState.HELD:
        return resume(phone, None)
    return await hold(phone, None)


class DndConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    code: Literal[486, 480, 603] = 486
    remember: bool = True
    state_file: str = ""


class CallsPlugin:
    """The call actions; ``call`` with the speed-dial names, and ``redial``: the last number this phone called."""

    def __init__(self) -> None:
        self.speed_dial: dict[str, str] = {}
        self.last_called: str | None = None
        self.dnd_config = DndConfig()
        self.dnd_file = state_dir() / "dnd.json"
        self.dnd = False
        self.phone: Phone | None = None

    @hookimpl
    def softphone_configure(self, config: Config) -> None:
        table: dict[str, Any] = config.section("speed_dial")
        for name, target in table.items():
            if not _NAME.fullmatch(name):
                raise ConfigError(str(config.path), f"speed_dial.{name}", "expected a name of letters, digits, - and _")
            if not isinstance(target, str) or not target.strip():
                raise ConfigError(str(config.path), f"speed_dial.{name}", "expected a number or a SIP URI to call")
        self.speed_dial = {name: target.strip() for name, target in table.items()}
        self.dnd_config = config.convert(config.section("dnd"), DndConfig, "dnd")
        if self.dnd_config.state_file:
            self.dnd_file = config.path.parent / self.dnd_config.state_file

    @hookimpl
    def softphone_startup(self, phone: Phone) -> None:
        self.phone = phone
        if self.dnd_config.remember and load_state(self.dnd_file, "do-not-disturb").get("on") is True:
            self.dnd = True
            log.info("do not disturb is on (kept from the last run): calls are refused with %s", self.dnd_config.code)
        self._show_dnd()

    @hookimpl
    def softphone_screen_call(self, call: Call, busy_with: Call | None) -> Refusal | None:
        return Refusal(self.dnd_config.code, "do not disturb") if self.dnd else None

    def set_dnd(self, phone: Phone, argument: str | None) -> dict[str, Any]:
        """``dnd`` toggles, ``dnd:on`` and ``dnd:off`` set."""
        if argument not in (None, "", "on", "off", "toggle"):
            raise CommandError(f"dnd takes on, off or toggle, not {argument!r}")
        on = (not self.dnd) if argument in (None, "", "toggle") else argument == "on"
        if on != self.dnd:
            self.dnd = on
            log.info("do not disturb %s", f"on: calls are refused with {self.dnd_config.code}" if on else "off")
            if self.dnd_config.remember:
                save_state(self.dnd_file, {"on": on}, "do-not-disturb")
        return self._show_dnd()

    def _show_dnd(self) -> dict[str, Any]:
        shown = {"on": self.dnd, "code": self.dnd_config.code}
        if self.phone is not None:
            self.phone.publish_status("dnd", shown)
            self.phone.emit("dnd", **shown)
        return shown

    @hookimpl
    def softphone_call_state_changed(self, call: Call, previous: CallState | None) -> None:
        if previous is None and call.direction is Direction.OUTGOING:
            self.last_called = call.remote_uri

    def dial(self, phone: Phone, argument: str | None) -> int:
        if not argument:
            raise CommandError("call needs a target: call:1001, call:sip:alice@pbx.example or a [speed_dial] name")
        return phone.dial(self.speed_dial.get(argument, argument))

    def redial(self, phone: Phone, argument: str | None) -> int:
        if self.last_called is None:
            raise CommandError("nothing to redial: this phone has not called anyone since it started")
        return phone.dial(self.last_called)

    @hookimpl
    def softphone_register_actions(self, register: RegisterAction) -> None:
        register("answer", answer)
        register("reject", reject)
        register("hangup", hangup)
        register("hold", hold)
        register("resume", resume)
        register("hold_toggle", hold_toggle)
        register("call", self.dial)
        register("redial", self.redial)
        register("mute_call_toggle", mute_call_toggle)
        register("swap", swap)
        register("dtmf", dtmf)
        register("conference", conference)
        register("dnd", self.set_dnd)


def mute_call_toggle(phone: Phone, argument: str | None) -> bool:
    call = phone.current_call(CallState.ACTIVE, CallState.HELD, CallState.TRANSFERRING)
    return phone.set_mic_muted(not call.mic_muted, call.id).mic_muted

