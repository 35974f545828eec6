"""The systemd units, users and rules that ship with the image: `systemd-analyze verify` with any warning
a failure (it exits 0 on unknown keys), `systemd-analyze security --offline` under a threshold, and the
properties the phone relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from firmware_app import app
from firmware_app import config as app_config

from .conftest import REPO

SYSTEMD = REPO / "systemd"
UNITS = sorted(p for p in SYSTEMD.iterdir() if p.suffix in (".service", ".timer", ".path"))
SERVICES = [p for p in UNITS if p.suffix == ".service"]
#: Exposure levels from `systemd-analyze security` (0 best, 10 worst) that each unit must stay under.
THRESHOLDS = {"firmware-app.service": 2.0}
DEFAULT_THRESHOLD = 3.5



def require(program: str) -> None:
    """Fail, not skip, without systemd's tools: tests/setup.sh installs systemd, as it installs the SIP peers."""
    if shutil.which(program) is None:
        pytest.fail(f"{program} is missing: run tests/setup.sh (Debian package systemd)", pytrace=False)


def parse_unit(path: Path) -> dict[str, list[str]]:
    """``Section.Key`` -> every value it is given, in order (systemd keys may repeat)."""
    values: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return values


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root folder with the system's standard units, ours in /etc, and the programs they start."""
    require("systemd-analyze")
    root = tmp_path_factory.mktemp("unit-root")
    system_units = next(p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir())
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    ours = root / "etc/systemd/system"
    ours.mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(unit, ours)
        for key, values in parse_unit(unit).items():
            if key.split(".")[-1].startswith("Exec"):
                for value in values:
                    program = root / value.lstrip("-@:+!").split()[0].lstrip("/")
                    program.parent.mkdir(parents=True, exist_ok=True)
                    program.write_text("#!/bin/sh\n")
                    program.chmod(0o755)
    return root


def verify(root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}", *units],
                          capture_output=True, text=True, timeout=60)


def test_units_verify_without_any_warning(unit_root: Path) -> None:
    done = verify(unit_root, *(str(unit_root / "etc/systemd/system" / u.name) for u in UNITS))

    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_verify_would_catch_an_unknown_key(unit_root: Path) -> None:
    """The check above has teeth: systemd-analyze exits 0 here, only its warning tells."""
    bad = unit_root / "etc/systemd/system/typo.service"
    bad.write_text("[Service]\nType=notify\nWatchdogSecs=30s\nExecStart=/opt/firmware-app/bin/firmware-app run\n")
    try:
        done = verify(unit_root, str(bad))
    finally:
        bad.unlink()

    assert done.returncode == 0
    assert "Unknown key 'WatchdogSecs'" in done.stderr


@pytest.mark.parametrize("unit", [u.name for u in SERVICES])
def test_security_exposure_under_threshold(unit_root: Path, unit: str) -> None:
    threshold = THRESHOLDS.get(unit, DEFAULT_THRESHOLD)
    done = subprocess.run(
        # --threshold= counts tenths: 20 is the "2.0" the report prints.
        ["systemd-analyze", "security", "--offline=true", f"--threshold={round(threshold * 10)}",
         f"--root={unit_root}", "--no-pager", unit],
        capture_output=True, text=True, timeout=60,
    )
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)

    assert level, done.stdout + done.stderr
    assert done.returncode == 0, f"{unit}: exposure {level[1]} is above {threshold}\n{done.stdout}"


def test_the_phone_unit() -> None:
    unit = parse_unit(SYSTEMD / "firmware-app.service")

    assert unit["Service.Type"] == ["notify"]
    assert unit["Service.NotifyAccess"] == ["main"]
    assert unit["Service.WatchdogSec"] == ["30s"]
    assert unit["Service.Restart"] == ["on-failure"]
    # The phone asking to be started again (a fleet command) is restarted, and is no failure.
    assert unit["Service.RestartForceExitStatus"] == unit["Service.SuccessExitStatus"] == [str(app.EXIT_RESTART)]
    assert unit["Service.ExecStart"] == ["/opt/firmware-app/bin/firmware-app -c /etc/firmware-app/config.toml run"]
    assert unit["Service.User"] == ["firmware-app"]
    # The password reaches the phone only as the credential the app looks for.
    assert unit["Service.LoadCredential"] == [f"{app_config.CREDENTIAL_NAME}:/etc/firmware-app/secrets.toml"]
    # The control socket's folder is the service's runtime directory.
    assert Path(app_config.Control().socket).parent == Path("/run") / unit["Service.RuntimeDirectory"][0]
    assert {"StateDirectory", "ConfigurationDirectory"} <= {k.split(".")[1] for k in unit}
    # Devices stay reachable: no PrivateDevices=, but the classes the phone uses are allowed.
    assert "Service.PrivateDevices" not in unit
    assert {v.split()[0] for v in unit["Service.DeviceAllow"]} == {"char-alsa", "char-input", "char-gpiochip"}
    assert "AF_UNIX" in unit["Service.RestrictAddressFamilies"][0]  # D-Bus system bus, sd_notify
    # A phone without network starts anyway and says so.
    ordering = " ".join(unit.get("Unit.After", []) + unit.get("Unit.Wants", []) + unit.get("Unit.Requires", []))
    assert "network-online.target" not in ordering
    assert "firmware-provision.service" in unit["Unit.After"][0]


def test_provisioning_units_order() -> None:
    boot = parse_unit(SYSTEMD / "firmware-provision.service")
    network = parse_unit(SYSTEMD / "firmware-provision-network.service")
    timer = parse_unit(SYSTEMD / "firmware-provision-network.timer")

    assert "firmware-app.service" in boot["Unit.Before"][0]
    assert boot["Service.ExecStart"][0].endswith("firmware_provision.py boot")
    assert network["Service.ExecStart"][0].endswith("firmware_provision.py network")
    assert "network-online.target" in network["Unit.After"][0]
    assert timer["Timer.OnBootSec"] and timer["Timer.OnUnitActiveSec"]
    assert "Install.WantedBy" not in network  # started by its timer only: boot never waits for the network


def test_sysusers_make_the_user_and_its_groups(tmp_path: Path) -> None:
    require("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\naudio:x:29:\ninput:x:101:\n")
    conf = SYSTEMD / "sysusers.d/firmware-app.conf"

    done = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(conf)], capture_output=True, text=True)

    assert done.returncode == 0, done.stderr
    assert "Failed" not in done.stderr and "Unknown" not in done.stderr
    groups = {line.split(":")[0]: line.split(":")[3].split(",") for line in (tmp_path / "etc/group").read_text().splitlines()}
    for group in ("audio", "gpio", "bluetooth", "input"):
        assert "firmware-app" in groups[group], group
    passwd = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()}
    assert 0 < int(passwd["firmware-app"][2]) < 1000  # a system user
    assert passwd["firmware-app"][6] in ("/usr/sbin/nologin", "/sbin/nologin")


def test_the_udev_rules() -> None:
    rules = [line for path in sorted((SYSTEMD / "udev").glob("*.rules")) for line in path.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    gpiochip = next(r for r in rules if 'KERNEL=="gpiochip*"' in r)

    assert {p.strip() for p in gpiochip.split(",")} == {
        'SUBSYSTEM=="gpio"', 'KERNEL=="gpiochip*"', 'GROUP="gpio"', 'MODE="0660"'}
    assert any('ENV{SYSTEMD_WANTS}+="wpa_supplicant@wlan0.service"' in r for r in rules)
    for rule in rules:
        for part in rule.split(","):
            assert re.fullmatch(r'\s*[A-Z_]+(\{[^}]*\})?(==|!=|=|\+=|:=)"[^"]*"\s*', part), part
