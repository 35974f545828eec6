"""The phone's actions: what buttons, the CLI and plugins run by name (``answer``, ``transfer:desk``)."""

from __future__ import annotations

import inspect
import logging
from typing import Any

from firmware_app.errors import CommandError
from firmware_app.hookspecs import ActionHandler, Phone

log = logging.getLogger("firmware_app.phone")


class ActionRegistry:
    """Actions contributed through ``softphone_register_actions``, by name, with the plugin that gave each."""

    def __init__(self) -> None:
        self._actions: dict[str, tuple[str, ActionHandler]] = {}

    def register(self, name: str, handler: ActionHandler) -> None:
        if ":" in name or not name:
            raise ValueError(f"action names are plain words, not {name!r}")
        owner = _owner(handler)
        if name in self._actions:
            log.warning("action %s of %s replaces the one of %s", name, owner, self._actions[name][0])
        self._actions[name] = (owner, handler)

    def names(self) -> list[str]:
        return sorted(self._actions)

    async def run(self, phone: Phone, action: str) -> Any:
        """Run ``name`` or ``name:argument``; raises CommandError when it cannot be done now."""
        name, _, argument = action.partition(":")
        if name not in self._actions:
            raise CommandError(f"unknown action {name!r} (known: {', '.join(self.names())})")
        _, handler = self._actions[name]
        log.info("action %s", action)
        result = handler(phone, argument or None)
        if inspect.isawaitable(result):
            result = await result
        return result


def _owner(handler: Any) -> str:
    module = getattr(handler, "__module__", None) or type(handler).__module__
    return module.split(".")[0]
