"""The image recipe's shell scripts pass shellcheck, and the boot partition's examples are valid settings."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from .conftest import REPO

IMAGE = REPO / "image"
#: Scripts written for this recipe: every shellcheck finding counts, down to style.
SCRIPTS = sorted({*IMAGE.rglob("*.sh"), IMAGE / "rootfs/growroot"} - {IMAGE / "pjsua2/build.sh"})


@pytest.fixture(scope="module")
def shellcheck() -> str:
    found = shutil.which("shellcheck")
    assert found, "shellcheck is not installed (apt-get install shellcheck)"
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_shellcheck(shellcheck: str, script: Path) -> None:
    done = subprocess.run([shellcheck, "--severity=style", "--external-sources", str(script)],
                          capture_output=True, text=True, cwd=script.parent)

    assert done.returncode == 0, done.stdout + done.stderr


def test_shellcheck_x86_pjsua2_build(shellcheck: str) -> None:
    """image/pjsua2/build.sh (the x86 recipe it shares its steps with) has no warnings or errors."""
    done = subprocess.run([shellcheck, "--severity=warning", str(IMAGE / "pjsua2/build.sh")],
                          capture_output=True, text=True)

    assert done.returncode == 0, done.stdout + done.stderr


def test_scripts_are_executable() -> None:
    for script in [*SCRIPTS, IMAGE / "pjsua2/build.sh", IMAGE / "provision/firmware_provision.py"]:
        assert script.stat().st_mode & 0o111, f"{script} is not executable"


def test_the_boot_partition_examples_are_valid_settings(tmp_path: Path, checker: list[str]) -> None:
    """The examples a person copies to the card pass the provisioner and the phone's own checker."""
    from .test_provision import Phone  # noqa: PLC0415 (shares the fixture class)
    import firmware_provision  # loaded by conftest

    phone = Phone(tmp_path / "root", firmware_provision, checker)
    shutil.copy(IMAGE / "boot/firmware-app.toml.example", phone.boot / "firmware-app.toml")
    shutil.copy(IMAGE / "boot/firmware-app-secrets.toml.example", phone.boot / "firmware-app-secrets.toml")
    assert tomllib.loads((phone.boot / "firmware-app.toml").read_text())["account"]

    result = phone.provisioner().boot()

    assert result.outcome == "applied", result.message
