"""Makes ``softphone_hfp`` importable from ``plugins/`` while it is not yet a package of pyproject.toml."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if "softphone_hfp" not in sys.modules:
    _init = Path(__file__).resolve().parents[2] / "plugins" / "softphone_hfp" / "__init__.py"
    _spec = importlib.util.spec_from_file_location(
        "softphone_hfp", _init, submodule_search_locations=[str(_init.parent)]
    )
    assert _spec is not None and _spec.loader is not None
    sys.modules["softphone_hfp"] = _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
