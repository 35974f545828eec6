"""A plugin-based softphone for Raspberry Pi headset devices."""

import pluggy

__version__ = "0.1.0"

#: Marker for plugin hook implementations: ``from firmware_app import hookimpl``.
hookimpl = pluggy.HookimplMarker("firmware_app")

__all__ = ["__version__", "hookimpl"]
