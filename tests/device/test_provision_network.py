"""Desk-phone style provisioning over HTTPS, against a real TLS server on 127.0.0.1 with a test CA:
certificate verification on, a wrong CA refused, files applied (and the phone restarted) only when they
changed, and a bad file never replacing the last good configuration."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import ProvisioningServer, Pki
from .test_provision import SECRETS, Phone

MAC = "b827eb123456"


def boot_settings(url: str, ca_file: str | None = "prov-ca.pem") -> str:
    ca = f'ca_file = "{ca_file}"\n' if ca_file else ""
    return f"""\
[device]
hostname = "phone-7"

[provisioning]
url = "{url}"
{ca}
[account]
registrar = "pbx.example"
user = "1000"
"""


COMMON = b'[account]\nregistrar = "pbx.fleet.example"\nreg_expiry = 600\n\n[logging]\nlevel = "warning"\n'
DEVICE = b'[account]\nuser = "2042"\ndisplay_name = "Desk 42"\n\n[secrets]\npassword = "from-the-server"\n'


@pytest.fixture
def phone(tmp_path: Path, provision: ModuleType, checker: list[str], pki: Pki,
          https_server: ProvisioningServer) -> Phone:
    p = Phone(tmp_path / "root", provision, checker)
    shutil.copy(pki.ca, p.boot / "prov-ca.pem")
    p.card(boot_settings(https_server.url()), SECRETS)
    assert p.provisioner().boot().outcome == "applied"
    return p


def serve(server: ProvisioningServer, common: bytes | None = COMMON, device: bytes | None = DEVICE) -> None:
    server.files.clear()
    if common is not None:
        server.files["/phones/common.toml"] = common
    if device is not None:
        server.files[f"/phones/{MAC}.toml"] = device


def test_the_common_file_then_the_devices_own(phone: Phone, https_server: ProvisioningServer) -> None:
    serve(https_server)

    result = phone.provisioner().network()

    assert result.outcome == "applied", result.message
    assert [path for path, _ in https_server.requests] == ["/phones/common.toml", f"/phones/{MAC}.toml"]
    assert all(MAC in agent for _, agent in https_server.requests)
    config = tomllib.loads(phone.config.read_text())
    # Layers merge table by table: boot file, then common, then the device's own file.
    assert config == {
        "account": {"registrar": "pbx.fleet.example", "user": "2042", "reg_expiry": 600, "display_name": "Desk 42"},
        "logging": {"level": "warning"},
    }
    assert tomllib.loads(phone.secrets.read_text()) == {"password": "from-the-server"}
    assert phone.restarts == 1
    assert phone.status()["network"]["outcome"] == "applied"


def test_unchanged_files_are_not_applied_and_the_phone_not_restarted(phone: Phone,
                                                                      https_server: ProvisioningServer) -> None:
    serve(https_server)
    assert phone.provisioner().network().outcome == "applied"
    installed = phone.config.read_bytes()

    # The checker cannot even run: proof that nothing was checked, installed or restarted.
    result = phone.provisioner(checker=["/nonexistent/firmware-app"]).network()

    assert result.outcome == "unchanged", result.message
    assert phone.restarts == 1
    assert phone.config.read_bytes() == installed

    serve(https_server, device=DEVICE.replace(b"Desk 42", b"Desk 43"))
    result = phone.provisioner().network()

    assert result.outcome == "applied", result.message
    assert tomllib.loads(phone.config.read_text())["account"]["display_name"] == "Desk 43"
    assert phone.restarts == 2


def test_a_bad_file_keeps_the_last_good_config(phone: Phone, https_server: ProvisioningServer) -> None:
    serve(https_server)
    assert phone.provisioner().network().ok
    good = phone.config.read_bytes(), phone.secrets.read_bytes()

    serve(https_server, device=b'[account]\nuser = "2042"\nlocal_port = 99999\n')
    result = phone.provisioner().network()

    assert result.outcome == "failed"
    assert result.message.startswith(f"{phone.boot / 'firmware-app.toml'} + {https_server.url()}common.toml + "
                                     f"{https_server.url()}{MAC}.toml: account.local_port: ")
    assert (phone.config.read_bytes(), phone.secrets.read_bytes()) == good
    assert phone.restarts == 1
    assert phone.status()["network"]["outcome"] == "failed"
    # A reboot rebuilds from the boot file and the last good network files, not the bad ones.
    assert phone.provisioner().boot().outcome == "unchanged"
    assert (phone.config.read_bytes(), phone.secrets.read_bytes()) == good

    serve(https_server, device=b"[account\n")
    result = phone.provisioner().network()
    assert result.outcome == "failed" and "not valid TOML" in result.message
    assert phone.config.read_bytes() == good[0]


def test_a_server_with_a_certificate_from_another_ca_is_refused(tmp_path: Path, provision: ModuleType,
                                                                checker: list[str], pki: Pki,
                                                                https_server: ProvisioningServer) -> None:
    phone = Phone(tmp_path / "root", provision, checker)
    shutil.copy(pki.other_ca, phone.boot / "prov-ca.pem")
    phone.card(boot_settings(https_server.url()), SECRETS)
    assert phone.provisioner().boot().ok
    installed = phone.config.read_bytes()
    serve(https_server)

    result = phone.provisioner().network()

    assert result.outcome == "failed"
    assert "CERTIFICATE_VERIFY_FAILED" in result.message
    assert https_server.requests == []  # no request went out over the unverified connection
    assert phone.config.read_bytes() == installed
    assert phone.restarts == 0


def test_without_a_ca_file_the_systems_trust_store_is_used(tmp_path: Path, provision: ModuleType,
                                                           checker: list[str],
                                                           https_server: ProvisioningServer) -> None:
    phone = Phone(tmp_path / "root", provision, checker)
    phone.card(boot_settings(https_server.url(), ca_file=None), SECRETS)
    assert phone.provisioner().boot().ok
    serve(https_server)

    result = phone.provisioner().network()

    assert result.outcome == "failed"
    assert "CERTIFICATE_VERIFY_FAILED" in result.message  # the test CA is in no system's store


def test_only_one_of_the_two_files_is_enough(phone: Phone, https_server: ProvisioningServer) -> None:
    serve(https_server, common=None)

    result = phone.provisioner().network()

    assert result.outcome == "applied", result.message
    assert tomllib.loads(phone.config.read_text())["account"]["user"] == "2042"


def test_neither_file_is_an_error(phone: Phone, https_server: ProvisioningServer) -> None:
    serve(https_server, common=None, device=None)
    installed = phone.config.read_bytes()

    result = phone.provisioner().network()

    assert result.outcome == "failed"
    assert result.message == (f"{https_server.url()}{MAC}.toml: not found, "
                              f"and neither is {https_server.url()}common.toml")
    assert phone.config.read_bytes() == installed


def test_a_redirect_to_plain_http_is_refused(phone: Phone, https_server: ProvisioningServer) -> None:
    https_server.files["/phones/common.toml"] = (302, "http://127.0.0.1:9/common.toml")

    result = phone.provisioner().network()

    assert result.outcome == "failed"
    assert "redirected to a non-HTTPS URL" in result.message


def test_a_server_error_is_reported(phone: Phone, https_server: ProvisioningServer) -> None:
    https_server.files["/phones/common.toml"] = (503, "")

    result = phone.provisioner().network()

    assert result.outcome == "failed"
    assert "the server answered 503" in result.message


def test_the_network_may_not_move_the_provisioning_url(phone: Phone, https_server: ProvisioningServer) -> None:
    serve(https_server, device=b'[provisioning]\nurl = "https://elsewhere.example/"\n')

    result = phone.provisioner().network()

    assert result.outcome == "failed"
    assert "provisioning.url: set only in the boot partition's firmware-app.toml" in result.message


def test_without_a_url_there_is_nothing_to_do(tmp_path: Path, provision: ModuleType, checker: list[str]) -> None:
    phone = Phone(tmp_path / "root", provision, checker)
    phone.card()
    assert phone.provisioner().boot().ok

    assert phone.provisioner().network().outcome == "nothing"


def test_an_unreachable_server_is_reported(tmp_path: Path, provision: ModuleType, checker: list[str],
                                           pki: Pki) -> None:
    phone = Phone(tmp_path / "root", provision, checker)
    shutil.copy(pki.ca, phone.boot / "prov-ca.pem")
    phone.card(boot_settings("https://127.0.0.1:9/phones/"), SECRETS)  # port 9: nothing listens
    assert phone.provisioner().boot().ok

    result = phone.provisioner().network()

    assert result.outcome == "failed"
    assert result.message.startswith("https://127.0.0.1:9/phones/common.toml: cannot be fetched: ")
