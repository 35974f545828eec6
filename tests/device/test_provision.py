"""First-boot provisioning from the boot partition, against a temporary root folder and the phone's own
checker: valid, invalid and missing files, the secret's removal, modes and owners, the last good config."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import PROVISION

SETTINGS = """\
[device]
hostname = "phone-7"
ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkW technician@example"]

[account]
registrar = "pbx.example"
user = "1000"
display_name = "Reception"

[logging]
level = "debug"
"""
SECRETS = 'password = "s3cret \\" quoted"\n'


class Phone:
    """A temporary root folder with a boot partition, and a provisioner that works on it."""

    def __init__(self, root: Path, provision: ModuleType, checker: list[str]) -> None:
        self.root = root
        self.boot = root / "boot/firmware"
        self.boot.mkdir(parents=True)
        (root / "etc").mkdir()
        (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tfirmware-phone\n::1\t\tlocalhost\n")
        (root / "etc/hostname").write_text("firmware-phone\n")
        self.provision = provision
        self.checker = checker
        self.restarts = 0
        self.update_requests = 0

    def provisioner(self, checker: list[str] | None = None):  # type: ignore[no-untyped-def]
        def restart() -> None:
            self.restarts += 1

        def start_update() -> None:
            self.update_requests += 1

        return self.provision.Provisioner(self.root, check_config=checker or self.checker, restart=restart,
                                          start_update=start_update, live_hostname=False, mac="b8:27:eb:12:34:56")

    def card(self, settings: str | None = SETTINGS, secrets: str | None = SECRETS) -> None:
        if settings is not None:
            (self.boot / "firmware-app.toml").write_text(settings)
        if secrets is not None:
            (self.boot / "firmware-app-secrets.toml").write_text(secrets)

    @property
    def config(self) -> Path:
        return self.root / "etc/firmware-app/config.toml"

    @property
    def secrets(self) -> Path:
        return self.root / "etc/firmware-app/secrets.toml"

    @property
    def state(self) -> Path:
        return self.root / "var/lib/firmware-provision"

    def status(self) -> dict:  # type: ignore[type-arg]
        return json.loads((self.state / "status.json").read_text())


@pytest.fixture
def phone(tmp_path: Path, provision: ModuleType, checker: list[str]) -> Phone:
    return Phone(tmp_path / "root", provision, checker)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_boot_installs_the_settings_and_removes_the_secret(phone: Phone, checker: list[str]) -> None:
    phone.card()

    old_umask = os.umask(0o077)  # as in firmware-provision.service
    try:
        result = phone.provisioner().boot()
    finally:
        os.umask(old_umask)

    assert result.outcome == "applied", result.message
    config = tomllib.loads(phone.config.read_text())
    # The provisioner's own tables are not the phone's configuration.
    assert config == {"account": {"registrar": "pbx.example", "user": "1000", "display_name": "Reception"},
                      "logging": {"level": "debug"}}
    assert tomllib.loads(phone.secrets.read_text()) == {"password": 's3cret " quoted'}
    assert _mode(phone.config) == 0o644
    assert _mode(phone.config.parent) == 0o755  # the phone's user must get in, whatever the umask was
    assert _mode(phone.secrets) == 0o600
    if os.geteuid() == 0:
        assert (phone.config.stat().st_uid, phone.secrets.stat().st_uid, phone.secrets.stat().st_gid) == (0, 0, 0)
    assert not (phone.boot / "firmware-app-secrets.toml").exists()
    assert (phone.boot / "firmware-app.toml").exists()  # the settings stay: a person may edit them again
    assert (phone.root / "etc/hostname").read_text() == "phone-7\n"
    hosts = (phone.root / "etc/hosts").read_text().splitlines()
    assert hosts == ["127.0.0.1\tlocalhost", "127.0.1.1\tphone-7", "::1\t\tlocalhost"]
    keys = phone.root / "root/.ssh/authorized_keys"
    assert keys.read_text().startswith("ssh-ed25519 ") and _mode(keys) == 0o600
    assert _mode(phone.state) == 0o700
    assert all(_mode(p) == 0o600 for p in phone.state.rglob("*") if p.is_file())
    assert not (phone.state / "secrets.pending").exists()
    assert phone.status()["boot"]["outcome"] == "applied"
    assert phone.restarts == 0  # at boot the phone starts after provisioning: nothing to restart
    # What was installed passes the phone's own check where it lies.
    done = subprocess.run([*checker, "check-config", str(phone.config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_an_unchanged_card_is_not_checked_again(phone: Phone) -> None:
    phone.card()
    assert phone.provisioner().boot().outcome == "applied"

    # A checker that cannot run proves that nothing was checked (or installed) the second time.
    result = phone.provisioner(checker=["/nonexistent/firmware-app"]).boot()

    assert result.outcome == "unchanged", result.message


def test_an_edited_card_is_installed(phone: Phone) -> None:
    phone.card()
    assert phone.provisioner().boot().ok
    phone.card(SETTINGS.replace('user = "1000"', 'user = "1001"'), secrets=None)

    result = phone.provisioner().boot()

    assert result.outcome == "applied", result.message
    assert tomllib.loads(phone.config.read_text())["account"]["user"] == "1001"
    assert tomllib.loads(phone.secrets.read_text()) == {"password": 's3cret " quoted'}  # kept


def test_a_bad_file_on_first_boot_installs_nothing_and_says_where(phone: Phone) -> None:
    phone.card(SETTINGS.replace('registrar = "pbx.example"', 'registrar = ""'))

    result = phone.provisioner().boot()

    assert result.outcome == "failed"
    assert result.message == (f"{phone.boot / 'firmware-app.toml'}: account.registrar: "
                              "expected a string of length >= 1")
    assert not phone.config.exists() and not phone.secrets.exists()
    # The secret left the card anyway, and waits in the state folder for a corrected settings file.
    assert not (phone.boot / "firmware-app-secrets.toml").exists()
    pending = phone.state / "secrets.pending"
    assert _mode(pending) == 0o600
    assert (phone.root / "etc/hostname").read_text() == "firmware-phone\n"
    assert phone.status()["boot"] == {**phone.status()["boot"], "outcome": "failed", "message": result.message}

    phone.card(secrets=None)
    result = phone.provisioner().boot()

    assert result.outcome == "applied", result.message
    assert tomllib.loads(phone.secrets.read_text()) == {"password": 's3cret " quoted'}
    assert not pending.exists()


def test_a_bad_file_never_replaces_the_last_good_config(phone: Phone) -> None:
    phone.card()
    assert phone.provisioner().boot().ok
    good_config, good_secrets = phone.config.read_bytes(), phone.secrets.read_bytes()

    phone.card('[account]\nregistrar = "pbx.example"\nuser = "1000"\ntransport = "carrier-pigeon"\n', secrets=None)
    result = phone.provisioner().boot()

    assert result.outcome == "failed"
    assert "account.transport: expected one of 'udp', 'tcp', 'tls'" in result.message
    assert phone.config.read_bytes() == good_config and phone.secrets.read_bytes() == good_secrets
    assert (phone.root / "etc/hostname").read_text() == "phone-7\n"
    assert phone.status()["boot"]["outcome"] == "failed"
    # The card's bad file stays the error until it is fixed, but the good one is what later runs build on.
    assert (phone.state / "boot-settings.toml").read_text() == SETTINGS


def test_an_unknown_section_is_refused_by_the_phones_checker(phone: Phone) -> None:
    phone.card(SETTINGS + "\n[acount]\nuser = 1\n")

    result = phone.provisioner().boot()

    assert result.outcome == "failed"
    assert result.message.startswith(f"{phone.boot / 'firmware-app.toml'}: acount: unknown section")


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ('[device]\nhostname = "-bad-"\n[account]\nregistrar = "x"\nuser = "1"\n',
         "device.hostname: expected a host name"),
        ('[device]\nname = "x"\n[account]\nregistrar = "x"\nuser = "1"\n',
         "device.name: unknown key (expected one of: hostname, ssh_authorized_keys, wifi_country, wifi_ssid)"),
        ('[secrets]\npassword = "x"\n[account]\nregistrar = "x"\nuser = "1"\n',
         "secrets: the password goes in firmware-app-secrets.toml"),
        ('[provisioning]\nurl = "http://insecure.example/"\n[account]\nregistrar = "x"\nuser = "1"\n',
         "provisioning.url: expected an https:// URL"),
        ('[account]\nregistrar = "x"\nuser = "1"\nsecrets_file = "/tmp/pw"\n',
         "account.secrets_file: set by provisioning"),
        ('[account\nregistrar = "x"\n', "not valid TOML"),
        ('[device]\nssh_authorized_keys = ["hunter2"]\n[account]\nregistrar = "x"\nuser = "1"\n',
         "device.ssh_authorized_keys: expected a list of public keys"),
    ],
)
def test_mistakes_in_the_provisioners_own_tables(phone: Phone, settings: str, expected: str) -> None:
    phone.card(settings)

    result = phone.provisioner().boot()

    assert result.outcome == "failed"
    assert result.message.startswith(str(phone.boot / "firmware-app.toml") + ": ")
    assert expected in result.message
    assert not phone.config.exists()


def test_no_settings_anywhere(phone: Phone) -> None:
    result = phone.provisioner().boot()

    assert result.outcome == "failed"
    assert "firmware-app.toml: not found" in result.message


def test_settings_without_any_password(phone: Phone) -> None:
    phone.card(secrets=None)

    result = phone.provisioner().boot()

    assert result.outcome == "failed"
    assert result.message == (f"{phone.boot / 'firmware-app-secrets.toml'}: password: "
                              'not found: write password = "..." in it')


def test_a_broken_secrets_file_is_removed_and_reported(phone: Phone) -> None:
    phone.card(secrets='password = "unterminated\n')

    result = phone.provisioner().boot()

    assert result.outcome == "failed"
    assert "firmware-app-secrets.toml: not valid TOML" in result.message
    assert not (phone.boot / "firmware-app-secrets.toml").exists()
    assert not phone.config.exists()


def test_a_hand_made_config_without_a_card_is_left_alone(phone: Phone) -> None:
    phone.config.parent.mkdir(parents=True)
    phone.config.write_text('[account]\nregistrar = "pbx"\nuser = "9"\n')

    result = phone.provisioner().boot()

    assert result.outcome == "nothing"
    assert phone.config.read_text() == '[account]\nregistrar = "pbx"\nuser = "9"\n'


def test_the_card_file_removed_later_keeps_the_installed_settings(phone: Phone) -> None:
    phone.card()
    assert phone.provisioner().boot().ok
    (phone.boot / "firmware-app.toml").unlink()

    result = phone.provisioner(checker=["/nonexistent/firmware-app"]).boot()

    assert result.outcome == "unchanged", result.message
    assert tomllib.loads(phone.config.read_text())["account"]["user"] == "1000"


def test_command_line_exit_status_and_error_line(phone: Phone, checker: list[str]) -> None:
    phone.card(SETTINGS.replace('user = "1000"', "user = 1000"))
    command = [sys.executable, str(PROVISION), "--root", str(phone.root), "--check-config", checker[0], "boot"]

    done = subprocess.run(command, capture_output=True, text=True)

    assert done.returncode == 1
    assert done.stderr.strip() == (f"firmware-provision: {phone.boot / 'firmware-app.toml'}: account.user: "
                                   "expected a string, got an integer")

    # The password left the card with the first attempt; it waited for the corrected settings.
    phone.card(secrets=None)
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("firmware-provision: applied: installed ")
    status = subprocess.run([*command[:-1], "status"], capture_output=True, text=True, check=True)
    assert json.loads(status.stdout)["boot"]["outcome"] == "applied"


def test_the_mac_address_comes_from_the_wired_interface(tmp_path: Path, provision: ModuleType) -> None:
    net = tmp_path / "sys/class/net"
    for name, address in (("lo", "00:00:00:00:00:00"), ("wlan0", "B8:27:EB:00:00:02"), ("eth0", "B8:27:EB:00:00:01")):
        (net / name).mkdir(parents=True)
        (net / name / "address").write_text(address + "\n")
        if name != "lo":
            (net / name / "device").mkdir()

    assert provision.Provisioner(tmp_path, check_config=["x"]).mac() == "b827eb000001"


@pytest.mark.parametrize(
    "data",
    [
        {"account": {"registrar": "pbx", "user": "1000"}, "logging": {"level": "info"}},
        {"a": {"b": {"c": [1, 2.5, True, "x"]}}, "top": "level \"quoted\" \\ \n\t\u0001 ü", "k.dotted key": 1},
        {"buttons": [{"pin": 17, "gestures": {"single": "answer"}}, {"pin": 27, "map": {"x": [{"y": 1}]}}]},
        {"empty": {}, "nested": {"empty": {}}, "list": [], "mixed": [[1, 2], ["a"]], "inline": [{"a": 1}, 2]},
    ],
)
def test_the_toml_writer_round_trips(provision: ModuleType, data: dict) -> None:  # type: ignore[type-arg]
    assert tomllib.loads(provision.dumps(data)) == data


def test_wifi_for_a_zero_2_w(phone: Phone) -> None:
    phone.card(SETTINGS.replace('hostname = "phone-7"', 'hostname = "phone-7"\nwifi_ssid = "Office \\"5G\\""\n'
                                'wifi_country = "DE"'),
               SECRETS + 'wifi_psk = "correct horse battery"\n')

    result = phone.provisioner().boot()

    assert result.outcome == "applied", result.message
    conf = phone.root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
    text = conf.read_text()
    assert _mode(conf) == 0o600
    assert "country=DE\n" in text
    ssid = b'Office "5G"'
    assert f"ssid={ssid.hex()}\n" in text
    expected = hashlib.pbkdf2_hmac("sha1", b"correct horse battery", ssid, 4096, 32).hex()
    assert f"psk={expected}\n" in text
    assert "correct horse" not in text
    # The phone's secrets file holds the SIP password only.
    assert tomllib.loads(phone.secrets.read_text()) == {"password": 's3cret " quoted'}

    # Without wifi_ssid the configuration goes away again.
    phone.card(SETTINGS, secrets=None)
    assert phone.provisioner().boot().ok  # "unchanged": the phone's own configuration is the same
    assert not conf.exists()


def test_a_short_wifi_key_is_refused(phone: Phone) -> None:
    phone.card(secrets=SECRETS + 'wifi_psk = "short"\n')

    result = phone.provisioner().boot()

    assert result.outcome == "failed"
    assert "firmware-app-secrets.toml: wifi_psk: expected a WPA passphrase" in result.message
