"""Built-in plugin: call forwarding, as desk phones do it: always, when busy, and when not answered.

A forwarded call is redirected, not bridged: the phone answers the caller ``302 Moved Temporarily`` with the
target as Contact, and the caller's side (the PBX, or the calling phone) calls the target itself. *Always*
and *busy* redirect before anything rings; *no answer* lets the call ring ``no_answer_s`` seconds first.

```toml
[forwarding]
always = ""          # a number or SIP URI: every call goes there
busy = "1003"        # calls that come while the phone is in a call
no_answer = "1003"   # calls not answered within no_answer_s
no_answer_s = 20
on = true            # the forwarding action turns it off and on (kept across restarts)
```

The action ``forwarding`` toggles it (``forwarding:on``, ``forwarding:off``); ``firmware-app status`` shows it
under ``forwarding``, and each change is a ``forwarding`` event. A target that is the phone itself is a
configuration error (the call would come straight back).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from firmware_app import Phone, hookimpl
from firmware_app.config import Config, complete_uri
from firmware_app.errors import CommandError, ConfigError
from firmware_app.hookspecs import RegisterAction
from firmware_app.model import Call, CallState, Direction, Refusal
from firmware_app.state import load_state, save_state, state_dir

log = logging.getLogger("firmware_app.forwarding")

MOVED_TEMPORARILY = 302


class ForwardingConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    always: str = ""
    busy: str = ""
    no_answer: str = ""
    no_answer_s: Annotated[float, Meta(ge=1, le=600)] = 20.0
    on: bool = True
    state_file: str = ""  # "" = $STATE_DIRECTORY/forwarding.json


def same_user(a: str, b: str) -> bool:
    """Whether two SIP URIs name the same user at the same host (ports, parameters and case aside)."""

    def key(uri: str) -> tuple[str, str]:
        rest = uri.split(":", 1)[1] if ":" in uri else uri
        user, _, host = rest.partition("@")
        return user.lower(), host.split(";")[0].split(":")[0].lower()

    return key(a) == key(b)


class ForwardingPlugin:
    def __init__(self) -> None:
        self.config = ForwardingConfig()
        self.targets: dict[str, str] = {}  # "always", "busy", "no_answer" -> a SIP URI
        self.on = False
        self.state_file = state_dir() / "forwarding.json"
        self.phone: Phone | None = None
        self._timers: dict[int, Any] = {}

    @hookimpl
    def softphone_configure(self, config: Config) -> None:
        self.config = config.convert(config.section("forwarding"), ForwardingConfig, "forwarding")
        own = f"sip:{config.account.user}@{config.domain}"
        self.targets = {}
        for kind in ("always", "busy", "no_answer"):
            target = getattr(self.config, kind).strip()
            if not target:
                continue
            uri = complete_uri(target, config.domain)
            if same_user(uri, own):
                raise ConfigError(str(config.path), f"forwarding.{kind}", f"{target!r} is this phone: the call would come straight back")
            self.targets[kind] = uri
        if self.config.state_file:
            self.state_file = config.path.parent / self.config.state_file

    @hookimpl
    def softphone_register_actions(self, register: RegisterAction) -> None:
        register("forwarding", self.set_forwarding)

    @hookimpl
    def softphone_startup(self, phone: Phone) -> None:
        self.phone = phone
        saved = load_state(self.state_file, "forwarding").get("on")
        self.on = saved if isinstance(saved, bool) else self.config.on
        if self.targets:
            log.info("forwarding %s: %s", "on" if self.on else "off", self._describe())
        self._show()

    @hookimpl
    def softphone_shutdown(self, phone: Phone) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    @hookimpl(tryfirst=True)  # an explicit forward wins over do not disturb
    def softphone_screen_call(self, call: Call, busy_with: Call | None) -> Refusal | None:
        if not self.on:
            return None
        for kind, applies in (("always", True), ("busy", busy_with is not None)):
            target = self.targets.get(kind)
            if target and applies and not same_user(call.remote_uri, target):
                return Refusal(MOVED_TEMPORARILY, f"forwarded ({kind.replace('_', ' ')})", target)
        return None

    @hookimpl
    def softphone_call_state_changed(self, call: Call, previous: CallState | None) -> None:
        target = self.targets.get("no_answer")
        if call.state is CallState.RINGING and previous is None and call.direction is Direction.INCOMING:
            if self.on and target and self.phone is not None and not same_user(call.remote_uri, target):
                self._timers[call.id] = self.phone.call_later(self.config.no_answer_s, self._no_answer, call.id, target)
        elif call.state is not CallState.RINGING and call.id in self._timers:
            self._timers.pop(call.id).cancel()

    def _no_answer(self, call_id: int, target: str) -> None:
        self._timers.pop(call_id, None)
        phone = self.phone
        if phone is None or not self.on:
            return
        call = phone.get_call(call_id)
        if call is None or call.state is not CallState.RINGING:
            return
        try:
            phone.reject(call_id, MOVED_TEMPORARILY, target)
        except CommandError as e:  # answered or given up at this very moment
            log.info("call %s: not forwarded: %s", call_id, e)
            return
        log.info("call %s from %s: not answered in %g s, forwarded to %s", call_id, call.remote_uri, self.config.no_answer_s, target)
        phone.emit("call_forwarded", call_id=call_id, remote_uri=call.remote_uri, target=target, reason="no answer")

    def set_forwarding(self, phone: Phone, argument: str | None) -> dict[str, Any]:
        if argument not in (None, "", "on", "off", "toggle"):
            raise CommandError(f"forwarding takes on, off or toggle, not {argument!r}")
        if not self.targets:
            raise CommandError("no forwarding target is configured ([forwarding] always, busy or no_answer)")
        on = (not self.on) if argument in (None, "", "toggle") else argument == "on"
        if on != self.on:
            self.on = on
            save_state(self.state_file, {"on": on}, "forwarding")
            log.info("forwarding %s: %s", "on" if on else "off", self._describe())
            if not on:
                for timer in self._timers.values():
                    timer.cancel()
                self._timers.clear()
        return self._show()

    def _describe(self) -> str:
        return ", ".join(f"{kind.replace('_', ' ')} to {uri}" for kind, uri in self.targets.items())

    def _show(self) -> dict[str, Any]:
        shown = {"on": self.on, **self.targets, "no_answer_s": self.config.no_answer_s}
        if self.phone is not None:
            self.phone.publish_status("forwarding", shown)
            self.phone.emit("forwarding", **shown)
        return shown
