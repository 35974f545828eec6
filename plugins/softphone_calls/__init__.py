"""Built-in plugin: the call actions every control maps to (answer, reject, hang up, hold, dial)."""

from __future__ import annotations

from firmware_app import Phone, hookimpl
from firmware_app.errors import CommandError
from firmware_app.hookspecs import RegisterAction
from firmware_app.model import CallState


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


def dial(phone: Phone, argument: str | None) -> int:
    if not argument:
        raise CommandError("call needs a target: call:1001 or call:sip:alice@pbx.example")
    return phone.dial(argument)


def mute_call_toggle(phone: Phone, argument: str | None) -> bool:
    call = phone.current_call(CallState.ACTIVE, CallState.HELD, CallState.TRANSFERRING)
    return phone.set_mic_muted(not call.mic_muted, call.id).mic_muted


@hookimpl
def softphone_register_actions(register: RegisterAction) -> None:
    register("answer", answer)
    register("reject", reject)
    register("hangup", hangup)
    register("hold", hold)
    register("resume", resume)
    register("hold_toggle", hold_toggle)
    register("call", dial)
    register("mute_call_toggle", mute_call_toggle)
