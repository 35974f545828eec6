"""A plugin-based softphone for Raspberry Pi headset devices.

A plugin needs these names only: ``hookimpl`` to mark its hooks (:mod:`firmware_app.hookspecs` lists them)
and ``Phone``, the protocol its ``phone`` argument follows.
"""

import pluggy

__version__ = "0.1.0"

#: Marker for plugin hook implementations: ``from firmware_app import hookimpl``.
hookimpl = pluggy.HookimplMarker("firmware_app")

from firmware_app.hookspecs import Phone  # noqa: E402 (after hookimpl: the contract names no concrete class)

__all__ = ["Phone", "__version__", "hookimpl"]
