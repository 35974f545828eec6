"""Built-in plugin: intercom and auto-answer, for callers allowed to open the line without a button press.

A call is answered without a press when its caller is in ``callers``, or when its INVITE asks for it with
the headers desk phones honour: ``Alert-Info: <...>;info=alert-autoanswer`` (also ``Auto Answer`` and
``info=alert-intercom``) or ``Call-Info: <...>;answer-after=N`` (answered after N seconds, ringing until
then). Only calls that passed the phone's admission get here: untrusted sources are refused before any
plugin hears of them (``[security] trusted_sources``). A short beep on the headset tells the user that the
line opened. Never while the phone is in another call, unless ``while_busy``.

```toml
[intercom]
callers = ["1001", "sip:door@pbx.example.com"]   # always answered at once
headers = true         # honour the auto-answer headers from any admitted caller
beep = true
while_busy = false
```
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from firmware_app import Phone, hookimpl
from firmware_app.config import Config, complete_uri
from firmware_app.errors import CommandError
from firmware_app.model import Call, CallState, IncomingAction

log = logging.getLogger("firmware_app.intercom")

BEEP = Path(__file__).parent / "sounds" / "intercom.wav"
BEEP_S = 0.25  # the beep, and a moment after it
_ANSWER_AFTER = re.compile(r"answer-after\s*=\s*(\d{1,4})", re.IGNORECASE)
_AUTO_ANSWER = re.compile(r"alert-autoanswer|auto\s*answer|alert-intercom", re.IGNORECASE)


class IntercomConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    callers: list[str] = []
    headers: bool = True
    beep: bool = True
    while_busy: bool = False
    max_answer_after_s: Annotated[int, Meta(ge=0, le=600)] = 60


def requested_delay(call: Call) -> int | None:
    """Seconds after which the INVITE asks to be answered (0: at once); None when it does not ask."""
    if match := _ANSWER_AFTER.search(call.call_info):
        return int(match[1])
    if _AUTO_ANSWER.search(call.alert_info) or _AUTO_ANSWER.search(call.call_info):
        return 0
    return None


def _user_and_host(uri: str) -> tuple[str, str]:
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    user, _, host = rest.partition("@")
    return user.lower(), host.split(";")[0].split(":")[0].lower()


class IntercomPlugin:
    def __init__(self) -> None:
        self.config = IntercomConfig()
        self.callers: list[str] = []
        self.phone: Phone | None = None

    @hookimpl
    def softphone_configure(self, config: Config) -> None:
        self.config = config.convert(config.section("intercom"), IntercomConfig, "intercom")
        self.callers = [complete_uri(c, config.domain) for c in self.config.callers if c.strip()]

    @hookimpl
    def softphone_startup(self, phone: Phone) -> None:
        self.phone = phone

    @hookimpl
    def softphone_incoming_call(self, call: Call) -> IncomingAction | None:
        phone = self.phone
        if phone is None:
            return None
        delay, why = self._delay(call)
        if delay is None:
            return None
        if not self.config.while_busy and any(c.id != call.id for c in phone.calls()):
            log.info("call %s from %s: not answered automatically while in another call", call.id, call.remote_uri)
            return None
        if delay > self.config.max_answer_after_s:
            log.warning("call %s: answer-after=%s is longer than max_answer_after_s: it rings", call.id, delay)
            return None
        log.info("call %s from %s: auto-answer (%s)%s", call.id, call.remote_uri, why, f" in {delay} s" if delay else "")
        phone.emit("auto_answer", call_id=call.id, remote_uri=call.remote_uri, reason=why, after_s=delay)
        if delay == 0:
            phone.call_soon(self._beep, call.id)
            return IncomingAction.ANSWER
        phone.call_later(delay, self._answer, call.id)
        return IncomingAction.RING

    def _delay(self, call: Call) -> tuple[int | None, str]:
        caller = _user_and_host(call.remote_uri)
        if any(_user_and_host(allowed) == caller for allowed in self.callers):
            return 0, "an intercom caller"
        if self.config.headers and (delay := requested_delay(call)) is not None:
            return delay, "the caller asked for it"
        return None, ""

    def _answer(self, call_id: int) -> None:
        phone = self.phone
        call = phone.get_call(call_id) if phone is not None else None
        if phone is None or call is None or call.state is not CallState.RINGING:
            return  # answered, rejected or given up meanwhile
        try:
            phone.answer(call_id)
        except CommandError as e:
            log.info("call %s: not auto-answered: %s", call_id, e)
            return
        self._beep(call_id)

    def _beep(self, call_id: int) -> None:
        phone = self.phone
        if phone is None or not self.config.beep:
            return
        try:
            handle = phone.play_sound(str(BEEP))
        except CommandError as e:
            log.warning("intercom beep: %s", e)
            return
        if handle is not None:
            phone.call_later(BEEP_S, phone.stop_sound, handle)
        phone.emit("sound", sound="intercom", state="started", call_id=call_id)
