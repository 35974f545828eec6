"""The provisioning side of software updates, against the real TLS server of the provisioning tests: the
settings say which version the phone should run (``[provisioning] version, bundle_url``, from the boot file
or the server's files), and provisioning hands a version that differs from the running slot's to
firmware-update.service through wanted.json, every time it looks, until that version runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import ProvisioningServer
from .test_provision_network import MAC, Phone, phone, serve  # noqa: F401 (phone is a fixture)

RUNNING = "1.0.0+20261101"


@pytest.fixture
def ab_phone(phone: Phone) -> Phone:  # noqa: F811
    """The phone on the A/B image: its slot says which version it is."""
    version = phone.root / "usr/lib/firmware-app/image-version"
    version.parent.mkdir(parents=True)
    version.write_text(RUNNING + "\n")
    return phone


def wanted(phone: Phone) -> dict:  # type: ignore[type-arg]
    return json.loads((phone.root / "var/lib/firmware-update/wanted.json").read_text())


def test_a_new_version_for_the_fleet_is_handed_to_the_update_with_its_absolute_url(
    ab_phone: Phone, https_server: ProvisioningServer
) -> None:
    serve(https_server, common=b'[provisioning]\nversion = "1.1.0"\nbundle_url = "bundles/fw-1.1.0.raucb"\n')

    result = ab_phone.provisioner().network()

    assert result.outcome == "applied", result.message
    assert "version 1.1.0 wanted (running 1.0.0+20261101): update requested" in result.message
    assert ab_phone.update_requests == 1
    assert wanted(ab_phone) == {
        "version": "1.1.0",
        "url": https_server.url("/phones/bundles/fw-1.1.0.raucb"),
        "source": https_server.url("/phones/common.toml"),
        "ca_file": "/var/lib/firmware-provision/provisioning-ca.pem",  # the provisioning server's own CA
    }
    # Not part of the phone's configuration.
    assert "provisioning" not in ab_phone.config.read_text()


def test_the_device_file_overrides_the_fleet_and_a_version_not_yet_running_is_asked_for_again(
    ab_phone: Phone, https_server: ProvisioningServer
) -> None:
    serve(https_server, common=b'[provisioning]\nversion = "1.1.0"\nbundle_url = "https://dl.example/1.1.0.raucb"\n',
          device=b'[provisioning]\nversion = "1.2.0-rc1"\nbundle_url = "https://dl.example/1.2.0-rc1.raucb"\n')
    assert ab_phone.provisioner().network().outcome == "applied"
    assert wanted(ab_phone)["version"] == "1.2.0-rc1"

    # Unchanged files, but the version still does not run (a download failed, a call lasted): asked again.
    result = ab_phone.provisioner().network()

    assert result.outcome == "unchanged", result.message
    assert ab_phone.update_requests == 2
    assert wanted(ab_phone)["url"] == "https://dl.example/1.2.0-rc1.raucb"


def test_the_running_version_asks_for_nothing(ab_phone: Phone, https_server: ProvisioningServer) -> None:
    serve(https_server, common=f'[provisioning]\nversion = "{RUNNING}"\nbundle_url = "x.raucb"\n'.encode())

    result = ab_phone.provisioner().network()

    assert result.ok and f"version {RUNNING} runs" in result.message
    assert ab_phone.update_requests == 0
    assert not (ab_phone.root / "var/lib/firmware-update/wanted.json").exists()


def test_a_system_without_slots_says_it_cannot_update(phone: Phone, https_server: ProvisioningServer) -> None:  # noqa: F811
    serve(https_server, common=b'[provisioning]\nversion = "1.1.0"\nbundle_url = "x.raucb"\n')

    result = phone.provisioner().network()

    assert result.ok, result.message  # the settings themselves still apply
    assert "cannot update itself" in result.message and "image-version" in result.message
    assert phone.update_requests == 0


@pytest.mark.parametrize(
    ("provisioning", "says"),
    [
        ('version = "1.1.0"\n', "provisioning.bundle_url: missing"),
        ('version = "1.1.0"\nbundle_url = "http://dl.example/x.raucb"\n', "provisioning.bundle_url: expected an https:// URL"),
        ('version = "1.1 0; rm -rf"\nbundle_url = "x.raucb"\n', "provisioning.version: expected a software version"),
        ('version = 11\nbundle_url = "x.raucb"\n', "provisioning.version: expected a software version"),
        ('ca_file = "other.pem"\n', "provisioning.ca_file: set only in the boot partition's"),
    ],
)
def test_a_wrong_version_entry_is_named_and_nothing_is_asked_for(
    ab_phone: Phone, https_server: ProvisioningServer, provisioning: str, says: str
) -> None:
    serve(https_server, device=b"[provisioning]\n" + provisioning.encode())

    result = ab_phone.provisioner().network()

    assert result.outcome == "failed"
    assert f"{MAC}.toml: {says}" in result.message
    assert ab_phone.update_requests == 0
