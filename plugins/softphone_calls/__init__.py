"""Built-in plugin: the call actions every control maps to (answer, reject, hang up, hold, dial, redial).

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
"""

from __future__ import annotations

import re
from typing import Any

from firmware_app import Phone, hookimpl
from firmware_app.config import Config
from firmware_app.errors import CommandError, ConfigError
from firmware_app.hookspecs import RegisterAction
from firmware_app.model import Call, CallState, Direction

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,39}")


def answer(phone: Phone, argument: str | None) -> int:
    return phone.answer().id


def reject(phone: Phone, argument: str | None) -> int:
    return phone.reject(code=int(argument) if argument else None).id


def hangup(phone: Phone, argument: str | None) -> int:
    return phone.hangup().id


async def hold(phone: Phone, argument: str | None) -> bool:
    if not await phone.hold():
        raise CommandError("the far end did not confirm the hold")
    return True


def resume(phone: Phone, argument: str | None) -> int:
    return phone.resume(None).id


async def hold_toggle(phone: Phone, argument: str | None) -> object:
    call = phone.current_call(CallState.ACTIVE, CallState.HELD)
    if call.state is CallState.HELD:
        return resume(phone, None)
    return await hold(phone, None)


class CallsPlugin:
    """The call actions; ``call`` with the speed-dial names, and ``redial``: the last number this phone called."""

    def __init__(self) -> None:
        self.speed_dial: dict[str, str] = {}
        self.last_called: str | None = None

    @hookimpl
    def softphone_configure(self, config: Config) -> None:
        table: dict[str, Any] = config.section("speed_dial")
        for name, target in table.items():
            if not _NAME.fullmatch(name):
                raise ConfigError(str(config.path), f"speed_dial.{name}", "expected a name of letters, digits, - and _")
            if not isinstance(target, str) or not target.strip():
                raise ConfigError(str(config.path), f"speed_dial.{name}", "expected a number or a SIP URI to call")
        self.speed_dial = {name: target.strip() for name, target in table.items()}

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


def mute_call_toggle(phone: Phone, argument: str | None) -> bool:
    call = phone.current_call(CallState.ACTIVE, CallState.HELD, CallState.TRANSFERRING)
    return phone.set_mic_muted(not call.mic_muted, call.id).mic_muted

