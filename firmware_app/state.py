"""Small state the phone keeps across restarts (volume, do-not-disturb...): one JSON file per plugin.

Files live in ``$STATE_DIRECTORY`` when systemd gives one (``StateDirectory=firmware-app``), else in
/var/lib/firmware-app. They are written atomically, so a power cut leaves the old file or the new one, never
half of one; a file that cannot be read is said once and the phone starts from its defaults.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_DIR = Path("/var/lib/firmware-app")


def state_dir() -> Path:
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) if state else DEFAULT_DIR


def load_state(path: Path, what: str) -> dict[str, Any]:
    """The saved state, or {} when there is none or it cannot be read (said, naming ``what`` it was for)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("%s state %s cannot be read (%s): starting from the defaults", what, path, e)
        return {}
    return data if isinstance(data, dict) else {}


def save_state(path: Path, state: dict[str, Any], what: str) -> None:
    """Write ``state`` atomically; a failure is logged, never raised (the phone works on without it)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w") as f:
            f.write(json.dumps(state) + "\n")
            f.flush()
            os.fsync(f.fileno())  # on the card before the rename: a reboot may follow at once (an update)
        os.replace(tmp, path)
    except OSError as e:
        log.warning("%s state %s cannot be written: %s", what, path, e)
