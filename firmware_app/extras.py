"""The optional libraries of plugins (the extras in pyproject.toml), imported only when a device needs them.

A plugin whose library is heavy (gpiozero, bleak and dbus-fast, evdev: each several megabytes of a small
device's memory) imports nothing of it at module level: it calls :func:`import_extra` from
``softphone_configure`` once the file configures one of its devices, and imports the library's names
inside the code that opens those devices (and under ``TYPE_CHECKING`` for its type hints). A phone that
configures no such device never imports the library.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable


def import_extra(log: logging.Logger, plugin: str, extra: str, modules: Iterable[str], without: str) -> bool:
    """Import ``modules``, the libraries of ``plugin``'s ``extra``; False when one of them cannot be imported.

    A missing library is not a configuration mistake: it is said in one error line, which names the plugin,
    the missing package and the extra to install, and ends with ``without`` (what the phone goes without).
    The plugin then starts nothing and the phone works on without it.
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            missing = e.name or module
            if missing.partition(".")[0] == module.partition(".")[0]:
                what = f"{module} is not installed"
            else:  # the library is there, one it needs is not (bleak without dbus-fast)
                what = f"{module} cannot be imported: {missing} is not installed"
            log.error("%s: %s; %s. Install it with: pip install 'firmware-app[%s]'", plugin, what, without, extra)
            return False
    return True
