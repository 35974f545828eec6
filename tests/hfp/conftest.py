"""Makes ``softphone_hfp`` importable from ``plugins/`` while it is not yet a package of pyproject.toml."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hfp.bluealsa_rig import NOT_INSTALLED, Bluealsa, bluealsa_installed

if "softphone_hfp" not in sys.modules:
    _init = Path(__file__).resolve().parents[2] / "plugins" / "softphone_hfp" / "__init__.py"
    _spec = importlib.util.spec_from_file_location(
        "softphone_hfp", _init, submodule_search_locations=[str(_init.parent)]
    )
    assert _spec is not None and _spec.loader is not None
    sys.modules["softphone_hfp"] = _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)


@pytest.fixture
def bluealsa() -> Iterator[Bluealsa]:
    """The real bluealsa (``-p hfp-ag -p hsp-ag``) on a private system bus beside a fake ``org.bluez``, ready
    for headsets to connect (tests/hfp/bluealsa_rig.py). It starts in 10 to 30 ms, so each test has its own."""
    if not bluealsa_installed():
        pytest.fail(NOT_INSTALLED)
    rig = Bluealsa().start()
    try:
        yield rig
    finally:
        rig.stop()
