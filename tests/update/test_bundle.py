"""Signed RAUC bundles and the device's RAUC configuration (image/rauc/), checked with the host's real rauc."""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RAUC_DIR = REPO / "image/rauc"
MAKE_KEYS = RAUC_DIR / "make-keys.sh"
SYSTEM_CONF = RAUC_DIR / "system.conf.sh"
BUILD_BUNDLE = RAUC_DIR / "build-bundle.sh"
VERSION = "0.9.0+20261201.1942"

if shutil.which("rauc") is None:
    pytest.skip("rauc is not installed on this machine (tests/setup.sh installs it: apt-get install rauc)",
                allow_module_level=True)


def run(*command: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env} if env else None)


def ok(*command: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = run(*command, env=env)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}{done.stderr}"
    return done


@dataclass(frozen=True)
class Keys:
    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class Device:
    """A root folder with the device's RAUC configuration; rauc's data directory is inside it, not /data."""

    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "etc/rauc/system.conf"

    def rauc(self, *args: str | Path, keyring: Path | None = None, conf: Path | None = None,
             ) -> subprocess.CompletedProcess[str]:
        keyring = keyring or self.root / "etc/rauc/keyring.pem"
        return run("rauc", "--conf", conf or self.conf, "--keyring", keyring, *args)

    def info(self, bundle: Path, **kwargs: Path) -> dict[str, object]:
        done = self.rauc("info", "--output-format=json", bundle, **kwargs)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def make_keys(directory: Path, bits: str | None = None) -> Keys:
    ok(MAKE_KEYS, directory, env={"RAUC_KEY_BITS": bits} if bits else None)
    return Keys(directory / "ca.cert.pem", directory / "signer.cert.pem", directory / "signer.key.pem")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """The operator's keys as make-keys.sh makes them by default."""
    return make_keys(tmp_path_factory.mktemp("keys") / "operator")


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """Someone else's CA and signer (a smaller key: only the CA differs in what is tested)."""
    return make_keys(tmp_path_factory.mktemp("keys") / "other", bits="2048")


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small ext4 root file system image with a payload well over rauc's 4 KiB minimum."""
    work = tmp_path_factory.mktemp("rootfs")
    tree = work / "tree"
    (tree / "usr/lib/firmware-app").mkdir(parents=True)
    (tree / "usr/lib/firmware-app/image-version").write_text(VERSION + "\n")
    (tree / "payload.bin").write_bytes(os.urandom(64 * 1024))
    image = work / "root.ext4"
    with image.open("wb") as f:
        f.truncate(4 * 1024 * 1024)
    ok("mke2fs", "-q", "-t", "ext4", "-O", "^has_journal", "-L", "ROOT", "-d", tree, image)
    return image


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Device:
    root = tmp_path_factory.mktemp("device")
    ok(SYSTEM_CONF, "--data-directory", root / "data/rauc", keys.ca, root)
    return Device(root)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, rootfs: Path, keys: Keys) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "firmware-app.raucb"
    ok(BUILD_BUNDLE, "--rootfs", rootfs, "--version", VERSION, "--cert", keys.cert, "--key", keys.key,
       "--keyring", keys.ca, out)
    return out


def build(rootfs: Path, keys: Keys, out: Path, *extra: str | Path) -> subprocess.CompletedProcess[str]:
    return run(BUILD_BUNDLE, "--rootfs", rootfs, "--version", VERSION, "--cert", keys.cert, "--key", keys.key,
               *extra, out)


# --- keys -------------------------------------------------------------------------------------------------


def test_make_keys_makes_a_code_signing_certificate_under_its_ca(keys: Keys) -> None:
    for private in (keys.key, keys.ca.with_name("ca.key.pem")):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    usage = ok("openssl", "x509", "-in", keys.cert, "-noout", "-ext", "extendedKeyUsage").stdout
    assert "critical" in usage and "Code Signing" in usage, usage
    constraints = ok("openssl", "x509", "-in", keys.ca, "-noout", "-ext", "basicConstraints").stdout
    assert "CA:TRUE" in constraints, constraints
    assert ok("openssl", "verify", "-CAfile", keys.ca, keys.cert).stdout.strip().endswith(": OK")


def test_make_keys_never_overwrites_keys(keys: Keys) -> None:
    before = keys.key.read_bytes()

    done = run(MAKE_KEYS, keys.key.parent)

    assert done.returncode != 0
    assert "refusing to overwrite" in done.stderr
    assert keys.key.read_bytes() == before


# --- the device's configuration ---------------------------------------------------------------------------


def test_system_conf_holds_the_contracts_values(tmp_path: Path, keys: Keys) -> None:
    ok(SYSTEM_CONF, keys.ca, tmp_path)

    conf = configparser.ConfigParser(interpolation=None, strict=True)
    conf.optionxform = str  # type: ignore[assignment,method-assign]  # GKeyFile keys are case-sensitive
    conf.read_string((tmp_path / "etc/rauc/system.conf").read_text())
    assert dict(conf["system"]) == {"compatible": "firmware-app-arm64", "bootloader": "uboot",
                                    "bundle-formats": "-plain", "data-directory": "/data/rauc"}
    assert dict(conf["keyring"]) == {"path": "/etc/rauc/keyring.pem", "check-purpose": "codesign"}
    assert dict(conf["slot.rootfs.0"]) == {"device": "/dev/disk/by-partuuid/5e1f0001-02", "type": "ext4",
                                           "bootname": "A", "resize": "true"}
    assert dict(conf["slot.rootfs.1"]) == {"device": "/dev/disk/by-partuuid/5e1f0001-03", "type": "ext4",
                                           "bootname": "B", "resize": "true"}
    # The device's identity goes into the slot just written (image/rootfs/rauc-post-install.sh).
    assert dict(conf["handlers"]) == {"post-install": "/usr/lib/firmware-app/rauc-post-install"}
    assert conf.sections() == ["system", "keyring", "handlers", "slot.rootfs.0", "slot.rootfs.1"]
    assert (tmp_path / "etc/rauc/keyring.pem").read_bytes() == keys.ca.read_bytes()
    assert (tmp_path / "etc/fw_env.config").read_text() == "/boot/firmware/firmware-boot.env 0x0000 0x4000\n"
    for name in ("etc/rauc/system.conf", "etc/rauc/keyring.pem", "etc/fw_env.config"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_system_conf_never_puts_a_private_key_into_the_image(tmp_path: Path, keys: Keys) -> None:
    combined = tmp_path / "signer-and-key.pem"
    combined.write_bytes(keys.cert.read_bytes() + keys.key.read_bytes())
    root = tmp_path / "root"
    root.mkdir()

    done = run(SYSTEM_CONF, combined, root)

    assert done.returncode != 0
    assert "holds a private key" in done.stderr
    assert list(root.iterdir()) == []


def test_rauc_loads_the_generated_system_conf(device: Device, bundle: Path) -> None:
    """rauc itself parses the file (a bad value, e.g. resize=maybe, fails to load)."""
    done = device.rauc("info", bundle)

    assert done.returncode == 0, done.stderr
    assert "Failed to load system config" not in done.stderr
    assert (device.root / "data/rauc").is_dir()  # the data directory rauc was given, not the host's /data


# --- signed bundles ---------------------------------------------------------------------------------------


def test_a_signed_bundle_verifies_with_the_operators_keyring(device: Device, bundle: Path, rootfs: Path,
                                                            tmp_path: Path) -> None:
    info = device.info(bundle)
    assert info["compatible"] == "firmware-app-arm64"
    assert info["version"] == VERSION
    [image] = info["images"]  # type: ignore[misc]
    assert image["rootfs"]["filename"] == "rootfs.ext4"
    assert image["rootfs"]["size"] == rootfs.stat().st_size
    assert image["rootfs"]["checksum"] == hashlib.sha256(rootfs.read_bytes()).hexdigest()

    text = device.rauc("info", bundle)
    assert "Bundle Format: \tverity" in text.stdout
    assert "Verified inline signature by 'O = firmware-app, CN = firmware-app development signer'" in text.stderr

    done = device.rauc("extract", bundle, tmp_path / "content")  # checks the verity hash tree too
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "content/rootfs.ext4").read_bytes() == rootfs.read_bytes()


def test_a_bundle_signed_by_another_ca_is_refused(device: Device, rootfs: Path, other_keys: Keys,
                                                  tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.raucb"
    ok(BUILD_BUNDLE, "--rootfs", rootfs, "--version", VERSION, "--cert", other_keys.cert, "--key",
       other_keys.key, foreign)
    assert device.rauc("info", foreign, keyring=other_keys.ca).returncode == 0  # a good bundle, for its CA

    done = device.rauc("info", foreign)

    assert done.returncode != 0
    assert "signature verification failed" in done.stderr
    assert "unable to get local issuer certificate" in done.stderr


def test_build_bundle_fails_when_the_keyring_does_not_verify_it(rootfs: Path, keys: Keys, other_keys: Keys,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "wrong.raucb"

    done = build(rootfs, other_keys, out, "--keyring", keys.ca)

    assert done.returncode != 0
    assert "does not verify against the keyring" in done.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no work folder left behind


def test_an_unsigned_bundle_is_refused(device: Device, rootfs: Path, tmp_path: Path) -> None:
    """A squashfs with a manifest and the image, as a bundle is, but no signature appended."""
    content = tmp_path / "content"
    content.mkdir()
    shutil.copy(rootfs, content / "rootfs.ext4")
    (content / "manifest.raucm").write_text(
        "[update]\ncompatible=firmware-app-arm64\nversion=9.9.9\n\n[image.rootfs]\nfilename=rootfs.ext4\n")
    unsigned = tmp_path / "unsigned.raucb"
    ok("mksquashfs", content, unsigned, "-quiet", "-noappend", "-all-root")

    done = device.rauc("info", unsigned)

    assert done.returncode != 0
    assert "Invalid bundle format: Signature size is 0" in done.stderr


def test_a_bundle_whose_signed_manifest_was_changed_is_refused(device: Device, bundle: Path,
                                                               tmp_path: Path) -> None:
    data = bundle.read_bytes()
    at = data.rfind(f"version={VERSION}".encode())  # in the signature's content: the verity bundle's manifest
    assert at > 0
    tampered = tmp_path / "tampered.raucb"
    tampered.write_bytes(data[:at] + b"version=9" + data[at + len("version=0"):])

    done = device.rauc("info", tampered)

    assert done.returncode != 0
    assert "signature verification failed" in done.stderr
    assert "verification failure" in done.stderr


def test_a_bundle_whose_payload_was_changed_is_refused(device: Device, bundle: Path, tmp_path: Path) -> None:
    """The verity hash tree catches a changed payload byte when the payload is read (extract, install)."""
    data = bytearray(bundle.read_bytes())
    data[100] ^= 0xFF  # in the squashfs, far before the signature
    tampered = tmp_path / "tampered.raucb"
    tampered.write_bytes(data)

    done = device.rauc("extract", tampered, tmp_path / "content")

    assert done.returncode != 0
    assert "bundle payload is corrupted" in done.stderr
    assert not (tmp_path / "content/rootfs.ext4").exists()


def test_a_plain_bundle_is_refused_by_the_device(device: Device, rootfs: Path, keys: Keys,
                                                 tmp_path: Path) -> None:
    content = tmp_path / "content"
    content.mkdir()
    shutil.copy(rootfs, content / "rootfs.ext4")
    (content / "manifest.raucm").write_text("[update]\ncompatible=firmware-app-arm64\nversion=9.9.9\n\n"
                                            "[bundle]\nformat=plain\n\n[image.rootfs]\nfilename=rootfs.ext4\n")
    plain = tmp_path / "plain.raucb"
    ok("rauc", "bundle", "--cert", keys.cert, "--key", keys.key, content, plain)
    # The same bundle passes where plain bundles are allowed: the refusal is the format, not the signature.
    allowing = tmp_path / "allowing.conf"
    allowing.write_text(device.conf.read_text().replace("bundle-formats=-plain\n", ""))
    assert device.rauc("info", plain, conf=allowing).returncode == 0

    done = device.rauc("info", plain)

    assert done.returncode != 0
    assert "Bundle format 'plain' not allowed" in done.stderr


def test_a_bundle_for_another_architecture_says_its_compatible(device: Device, rootfs: Path, keys: Keys,
                                                              tmp_path: Path) -> None:
    """The update command compares this with the device's compatible (rauc info itself does not)."""
    out = tmp_path / "amd64.raucb"
    ok(BUILD_BUNDLE, "--rootfs", rootfs, "--version", "1.2.3", "--compatible", "firmware-app-amd64",
       "--cert", keys.cert, "--key", keys.key, "--keyring", keys.ca, out)

    info = device.info(out)

    assert info["compatible"] == "firmware-app-amd64"
    assert info["version"] == "1.2.3"  # a fresh manifest per bundle: not the previous bundle's version


# --- build-bundle.sh's errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "message"), [
    (("--rootfs", "missing.ext4"), "--rootfs missing.ext4: no such file"),
    (("--key", None), "--key is missing"),
    (("--key", "{cert}"), "holds no PEM private key"),
    (("--cert", "missing.pem"), "--cert missing.pem: no such file"),
    (("--keyring", "missing.pem"), "--keyring missing.pem: no such file"),
    (("--version", "1.0 beta"), "--version '1.0 beta'"),
    (("--rootfs", "{tiny}"), "too small for a root file system image"),
    (("OUT", "bundle.tar"), "must end in .raucb"),
], ids=lambda value: str(value))
def test_build_bundle_says_what_is_wrong(tmp_path: Path, rootfs: Path, keys: Keys,
                                         change: tuple[str, str | None], message: str) -> None:
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"x" * 4096)
    options: dict[str, str | None] = {"--rootfs": str(rootfs), "--version": VERSION, "--cert": str(keys.cert),
                                      "--key": str(keys.key), "OUT": "bundle.raucb"}
    name, value = change
    options[name] = value and value.format(cert=keys.cert, tiny=tiny)
    out = str(options.pop("OUT"))
    args = [part for name, value in options.items() if value is not None for part in (name, value)]

    done = subprocess.run([str(BUILD_BUNDLE), *args, out], capture_output=True, text=True, cwd=tmp_path,
                          timeout=60)

    assert done.returncode != 0
    assert message in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]  # no bundle, no work folder
