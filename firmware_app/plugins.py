"""Loading plugins and calling their hooks through one typed facade that isolates their failures.

Plugins are found in the entry-point group ``firmware_app``; the built-in features use the same group as
third-party plugins. Load order: the built-ins in :data:`BUILTIN_ORDER`, then every other plugin by name.
``[plugins] disable = [...]`` blocks plugins by name. pluggy stops a hook call at the first exception; this
host calls each implementation on its own, logs a failure with the plugin's name and traceback and goes on
with the others, so one broken plugin never stops a call from being answered. ``strict=True`` (tests)
re-raises instead. ``FIRMWARE_APP_TRACE_HOOKS=1`` logs every hook call.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from typing import Any, Callable, Iterable

import pluggy

from firmware_app import hookspecs
from firmware_app.errors import ConfigError
from firmware_app.model import (
    ButtonEvent,
    Call,
    CallState,
    IncomingAction,
    MessageWaiting,
    PhoneState,
    Refusal,
    Registration,
    TransferStatus,
)

log = logging.getLogger("firmware_app.plugins")

ENTRY_POINT_GROUP = "firmware_app"
#: Built-in plugins, loaded first and in this order (later ones are asked first by firstresult hooks).
BUILTIN_ORDER = ("softphone_calls", "softphone_buttons", "softphone_transfer")


class PluginHost:
    """The phone's side of the plugin contract in :mod:`firmware_app.hookspecs`."""

    def __init__(self, *, strict: bool = False) -> None:
        self.pm = pluggy.PluginManager("firmware_app")
        self.pm.add_hookspecs(hookspecs)
        self.strict = strict
        self.trace = os.environ.get("FIRMWARE_APP_TRACE_HOOKS") == "1"
        self.order: list[str] = []
        self._actions: list[tuple[str, Any]] | None = None

    # --- loading ----------------------------------------------------------------------------------------

    def load_entry_points(self, disable: Iterable[str] = (), only: Iterable[str] | None = None) -> None:
        disabled, wanted = set(disable), set(only) if only is not None else None
        eps = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
        names = [n for n in BUILTIN_ORDER if n in eps] + sorted(n for n in eps if n not in BUILTIN_ORDER)
        for name in names:
            if name in disabled or (wanted is not None and name not in wanted):
                log.info("plugin %s: disabled by configuration", name)
                continue
            try:
                obj = eps[name].load()
                self.register(obj() if isinstance(obj, type) else obj, name)
            except Exception:
                if self.strict:
                    raise
                log.exception("plugin %s: could not be loaded; the phone goes on without it", name)
        for name in sorted(disabled | (wanted or set())):
            if name not in eps:
                log.warning("plugin %s named in [plugins] is not installed", name)

    def load_modules(self, specs: Iterable[str]) -> None:
        """Load plugins by import name (``[plugins] modules``), like entry points but without installing."""
        for spec in specs:
            module_name, _, attr = spec.partition(":")
            try:
                obj: Any = importlib.import_module(module_name)
                if attr:
                    obj = getattr(obj, attr)
                self.register(obj() if isinstance(obj, type) else obj, spec)
            except Exception:
                if self.strict:
                    raise
                log.exception("plugin %s: could not be loaded; the phone goes on without it", spec)

    def register(self, plugin: object, name: str) -> None:
        self.pm.register(plugin, name)
        self.pm.check_pending()  # a misspelt hook name fails here, loudly
        self.order.append(name)

    def names(self) -> list[str]:
        return list(self.order)

    # --- isolation --------------------------------------------------------------------------------------

    def _call(self, hook_name: str, *, reverse: bool = False, **kwargs: Any) -> Any:
        hook = getattr(self.pm.hook, hook_name)
        firstresult = bool(hook.spec and hook.spec.opts.get("firstresult"))  # as hookspecs.py declares it
        impls = hook.get_hookimpls()
        # pluggy calls the last registered implementation first; so do we (and the reverse on shutdown).
        ordered = impls if reverse else list(reversed(impls))
        results = []
        for impl in ordered:
            args = {a: kwargs[a] for a in impl.argnames}
            if self.trace:
                log.debug("hook %s -> %s", hook_name, impl.plugin_name)
            try:
                result = impl.function(**args)
            except ConfigError:
                raise
            except Exception:
                if self.strict:
                    raise
                log.exception("plugin %s failed in %s; the phone carries on", impl.plugin_name, hook_name)
                continue
            if result is not None:
                if firstresult:
                    return result
                results.append(result)
        return None if firstresult else results

    # --- the typed facade, one method per hook ----------------------------------------------------------

    def configure(self, config: Any) -> None:
        self._call("softphone_configure", config=config)

    def startup(self, phone: Any) -> None:
        self._call("softphone_startup", phone=phone)

    def shutdown(self, phone: Any) -> None:
        self._call("softphone_shutdown", reverse=True, phone=phone)

    def registration_changed(self, registration: Registration) -> None:
        self._call("softphone_registration_changed", registration=registration)

    def incoming_call(self, call: Call) -> IncomingAction | None:
        result = self._call("softphone_incoming_call", call=call)
        if result is None:
            return None
        try:
            return IncomingAction(result)
        except ValueError:
            log.error("a plugin answered softphone_incoming_call with %r; ringing instead", result)
            return None

    def screen_call(self, call: Call, busy_with: Call | None) -> Refusal | None:
        result = self._call("softphone_screen_call", call=call, busy_with=busy_with)
        if result is not None and not isinstance(result, Refusal):
            log.error("a plugin answered softphone_screen_call with %r; letting the call in", result)
            return None
        return result

    def call_state_changed(self, call: Call, previous: CallState | None) -> None:
        self._call("softphone_call_state_changed", call=call, previous=previous)

    def line_state_changed(self, uri: str, state: str) -> None:
        self._call("softphone_line_state_changed", uri=uri, state=state)

    def dtmf_received(self, call: Call, digit: str) -> None:
        self._call("softphone_dtmf_received", call=call, digit=digit)

    def call_waiting(self, call: Call, busy_with: Call, code: int) -> None:
        self._call("softphone_call_waiting", call=call, busy_with=busy_with, code=code)

    def phone_state_changed(self, state: PhoneState, previous: PhoneState) -> None:
        self._call("softphone_phone_state_changed", state=state, previous=previous)

    def message_waiting(self, status: MessageWaiting) -> None:
        self._call("softphone_message_waiting", status=status)

    def transfer_status(self, status: TransferStatus) -> None:
        self._call("softphone_transfer_status", status=status)

    def doctor(self, config: Any) -> list[dict[str, Any]]:
        return self._call("softphone_doctor", config=config)

    def map_input(self, event: ButtonEvent, state: PhoneState) -> str | None:
        return self._call("softphone_map_input", event=event, state=state)

    def wants_double(self, source: str, button: str, state: PhoneState) -> bool:
        return any(self._call("softphone_wants_double", source=source, button=button, state=state))

    def register_actions(self, register: Callable[[str, Any], None]) -> None:
        self._call("softphone_register_actions", register=register)

    def actions(self) -> list[tuple[str, Any]]:
        """Every ``(name, handler)`` the plugins contribute, asked for once (check-config and the phone share it)."""
        if self._actions is None:
            contributed: list[tuple[str, Any]] = []
            self.register_actions(lambda name, handler: contributed.append((name, handler)))
            self._actions = contributed
        return list(self._actions)
