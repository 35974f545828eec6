"""Makes ``softphone_usb_headset`` importable from ``plugins/``: it is not a package of pyproject.toml yet."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if "softphone_usb_headset" not in sys.modules:
    _init = Path(__file__).resolve().parents[2] / "plugins" / "softphone_usb_headset" / "__init__.py"
    _spec = importlib.util.spec_from_file_location(
        "softphone_usb_headset", _init, submodule_search_locations=[str(_init.parent)]
    )
    assert _spec is not None and _spec.loader is not None
    sys.modules["softphone_usb_headset"] = _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
