"""Device provisioning: the phone's settings from the boot partition and, optionally, an HTTPS server.

Two commands, each run by a systemd unit (systemd/firmware-provision*.service):

``boot``
    Reads ``firmware-app.toml`` and ``firmware-app-secrets.toml`` from the boot partition (FAT, editable on
    any computer), validates the result with the phone's own ``firmware-app check-config``, installs it as
    /etc/firmware-app/config.toml (0644 root:root) and secrets.toml (0600 root:root; the service gets it as
    a systemd credential), removes the secrets file from the FAT partition and sets the hostname.
``network``
    Desk-phone style: fetches ``URL/common.toml`` and then ``URL/<mac>.toml`` (the MAC address in 12
    lowercase hex digits) over HTTPS with certificate verification, and only when they changed validates,
    installs and restarts the phone.

The settings file is the phone's configuration plus two tables of its own, which are not installed there:
``[device] hostname, ssh_authorized_keys, wifi_ssid, wifi_country`` and ``[provisioning] url, ca_file``, plus
``[provisioning] version, bundle_url``: the software version the device should run and its signed bundle
(also from the server's files, so an operator rolls a version out to all phones or to one), handed to
``firmware-app update --wanted`` through /var/lib/firmware-update/wanted.json.
The secrets file holds ``password`` (and ``wifi_psk``); a network file may carry them as ``[secrets]``.
Layers merge table by table: boot file, then common, then the device's own file.

A bad file never replaces a good one: the device keeps the last good configuration, the error is printed
as one line ``FILE: KEY: expectation`` (in the unit's journal), kept in the state folder's status.json,
and the command exits 1. Every path is under ``--root`` so that tests run it against a temporary folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from firmware_app import https  # the phone's venv runs this script

SETTINGS_NAME = "firmware-app.toml"
SECRETS_NAME = "firmware-app-secrets.toml"
#: Tables of the settings file that the provisioner consumes; everything else is the phone's configuration.
OWN_TABLES = {
    "device": {"hostname", "ssh_authorized_keys", "wifi_ssid", "wifi_country"},
    "provisioning": {"url", "ca_file", "version", "bundle_url"},
    "secrets": {"password", "wifi_psk"},
}
#: Largest provisioning file accepted from the network.
MAX_FETCH_BYTES = 1 << 20
FETCH_TIMEOUT_S = 20.0
PHONE_UNIT = "firmware-app.service"
DEFAULT_RESTART = ("systemctl", "restart", "--no-block", PHONE_UNIT)
#: Installs the wanted version (firmware-app update --wanted): it waits for the phone to be idle itself.
DEFAULT_START_UPDATE = ("systemctl", "start", "--no-block", "firmware-update.service")
#: Keys of [provisioning] that a provisioning server's file may set too: the software version to run.
NETWORK_PROVISIONING_KEYS = {"version", "bundle_url"}


class ProvisionError(Exception):
    """One mistake, said the way the phone says it: ``FILE: KEY: expectation``."""

    def __init__(self, file: str, key: str, message: str) -> None:
        super().__init__(f"{file}: {key}: {message}" if key else f"{file}: {message}")
        self.file, self.key, self.message = file, key, message


@dataclass(frozen=True)
class Result:
    """What one run did: ``applied``, ``unchanged``, ``nothing`` (nothing to do) or ``failed``."""

    outcome: str
    message: str

    @property
    def ok(self) -> bool:
        return self.outcome != "failed"


@dataclass(frozen=True)
class Layer:
    """One source of settings: its name for messages, its text, and its parsed tables."""

    name: str
    raw: bytes
    data: dict[str, Any]


class Paths:
    """Where everything lives, below ``root`` (``/`` on a device)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.boot = root / "boot/firmware"
        self.etc = root / "etc/firmware-app"
        self.config = self.etc / "config.toml"
        self.secrets = self.etc / "secrets.toml"
        self.hostname = root / "etc/hostname"
        self.hosts = root / "etc/hosts"
        self.sys_net = root / "sys/class/net"
        self.state = root / "var/lib/firmware-provision"
        self.boot_copy = self.state / "boot-settings.toml"  # the last good boot settings
        self.ca_copy = self.state / "provisioning-ca.pem"
        self.pending_secrets = self.state / "secrets.pending"  # taken off the card, not yet installed
        self.wifi_psk = self.state / "wifi-psk"
        self.wpa_conf = root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
        self.net_common = self.state / "network/common.toml"  # the last good network files
        self.net_device = self.state / "network/device.toml"
        self.applied = self.state / "applied.sha256"
        self.status = self.state / "status.json"
        self.image_version = root / "usr/lib/firmware-app/image-version"  # the running slot's version
        self.update_state = root / "var/lib/firmware-update"
        self.wanted = self.update_state / "wanted.json"  # read by firmware-app update --wanted


class Provisioner:
    """The provisioning steps, against a root folder (``/`` on the device, a temporary folder in tests).

    ``check_config`` is the phone's checker command (its ``check-config PATH`` is appended); ``restart`` is
    called after the network installed a new configuration; ``start_update`` after it asked for another
    software version (wanted.json); ``live_hostname`` also sets the running system's hostname (only on a
    real device).
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = "/",
        *,
        check_config: Sequence[str] = (),
        restart: Callable[[], None] | None = None,
        start_update: Callable[[], None] | None = None,
        live_hostname: bool | None = None,
        mac: str | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
    ) -> None:
        self.paths = Paths(Path(root))
        self.check_config = list(check_config) or [_default_checker()]
        self.restart = restart
        self.start_update = start_update
        self.live_hostname = Path(root).resolve() == Path("/") if live_hostname is None else live_hostname
        self._mac = mac
        self._now = now

    # -- the two commands ------------------------------------------------------------------------------

    def boot(self) -> Result:
        """Install the boot partition's settings (first boot, or whenever a person edited them)."""
        p = self.paths
        _mkdir_private(p.state)
        problems: list[str] = []
        try:
            self._take_card_secrets()
        except ProvisionError as e:
            problems.append(str(e))
        settings_file = p.boot / SETTINGS_NAME
        try:
            if settings_file.is_file():
                boot = self._parse_layer(str(settings_file), settings_file.read_bytes(), "boot")
            elif p.boot_copy.is_file():
                # The card's file is gone: keep what was installed from it.
                boot = self._parse_layer(str(settings_file), p.boot_copy.read_bytes(), "boot")
            elif p.config.is_file():
                message = f"no {settings_file}: keeping {p.config} as it is"
                return self._finish("boot", Result("failed" if problems else "nothing", _join(problems, message)))
            else:
                problems.append(
                    f"{settings_file}: not found: put the phone's settings there (and the password in {SECRETS_NAME})"
                )
                return self._finish("boot", Result("failed", _join(problems)))
            result = self._apply(boot, self._last_good_network())
        except ProvisionError as e:
            result = Result("failed", str(e))
        if problems:
            result = Result("failed", _join(problems, result.message))
        return self._finish("boot", result)

    def network(self) -> Result:
        """Fetch the provisioning server's files and install them when they changed."""
        p = self.paths
        _mkdir_private(p.state)
        if not p.boot_copy.is_file():
            return self._finish("network", Result("nothing", "no settings installed from the boot partition yet"))
        try:
            boot = self._parse_layer(str(p.boot / SETTINGS_NAME), p.boot_copy.read_bytes(), "boot")
            url = boot.data.get("provisioning", {}).get("url")
            if not url:
                return self._finish("network", Result("nothing", "no provisioning URL ([provisioning] url)"))
            ca = p.ca_copy if p.ca_copy.is_file() else None
            mac = self.mac()
            base = url.rstrip("/") + "/"
            common_url, device_url = base + "common.toml", base + f"{mac}.toml"
            common_raw = fetch(common_url, ca, mac)
            device_raw = fetch(device_url, ca, mac)
            if common_raw is None and device_raw is None:
                raise ProvisionError(device_url, "", f"not found, and neither is {common_url}")
            network = [
                self._parse_layer(u, raw, "network")
                for u, raw in ((common_url, common_raw), (device_url, device_raw))
                if raw is not None
            ]
            wanted = self._wanted_version(boot, network, base)
            if [layer.raw for layer in network] == [layer.raw for layer in self._last_good_network()]:
                result = Result("unchanged", f"{base}: no change")
            else:
                result = self._apply(boot, network)
                _write_private(p.net_common, common_raw)
                _write_private(p.net_device, device_raw)
        except ProvisionError as e:
            return self._finish("network", Result("failed", str(e)))
        if result.outcome == "applied" and self.restart is not None:
            self.restart()
            result = Result("applied", result.message + "; phone restarted")
        if wanted is not None:
            result = Result(result.outcome, f"{result.message}; {self._request_update(*wanted)}")
        return self._finish("network", result)

    # -- the steps -------------------------------------------------------------------------------------

    def _wanted_version(self, boot: Layer, network: list[Layer], base: str) -> tuple[str, str, Layer] | None:
        """The software version the settings ask for and its bundle's absolute URL, or None when they do not."""
        version, url, source = None, None, boot
        for layer in (boot, *network):
            prov = layer.data.get("provisioning", {})
            if "version" in prov:
                version, source = prov["version"], layer
            if "bundle_url" in prov:
                url = urllib.parse.urljoin(base, prov["bundle_url"])
        if version is None:
            return None
        if not url:
            raise ProvisionError(source.name, "provisioning.bundle_url", f"missing: where is version {version}'s bundle?")
        if urllib.parse.urlsplit(url).scheme != "https":
            raise ProvisionError(source.name, "provisioning.bundle_url", f"expected an https:// URL, got {url}")
        return version, url, source

    def _request_update(self, version: str, url: str, source: Layer) -> str:
        """Ask firmware-update.service for ``version`` when another one runs; what was done, for the status."""
        p = self.paths
        try:
            running = p.image_version.read_text().strip()
        except OSError:
            return f"version {version} wanted, but this system cannot update itself (no {p.image_version}: not the A/B image)"
        if running == version:
            return f"version {version} runs"
        wanted = {"version": version, "url": url, "source": source.name}
        if p.ca_copy.is_file():
            wanted["ca_file"] = str(Path("/") / p.ca_copy.relative_to(p.root))
        p.update_state.mkdir(parents=True, exist_ok=True, mode=0o750)
        if _load_json(p.wanted) != wanted:
            _write_file(p.wanted, (json.dumps(wanted, indent=2) + "\n").encode(), 0o640)
        if self.start_update is not None:
            self.start_update()
        return f"version {version} wanted (running {running}): update requested"


    def _take_card_secrets(self) -> None:
        """Move the card's secrets file into the state folder: a secret never stays on the FAT partition."""
        card = self.paths.boot / SECRETS_NAME
        if not card.is_file():
            return
        raw = card.read_bytes()
        _remove_secret_file(card)
        data = _parse_toml(str(card), raw)
        _check_keys(str(card), "", data, OWN_TABLES["secrets"])
        password = data.get("password")
        if not isinstance(password, str) or not password:
            raise ProvisionError(str(card), "password", "expected a non-empty string (the file was removed: write it again)")
        if "wifi_psk" in data:
            _check_psk(str(card), "wifi_psk", data["wifi_psk"])
        _write_private(self.paths.pending_secrets, raw)

    def _parse_layer(self, name: str, raw: bytes, kind: str) -> Layer:
        data = _parse_toml(name, raw)
        for table, keys in OWN_TABLES.items():
            if table not in data:
                continue
            if not isinstance(data[table], dict):
                raise ProvisionError(name, table, "expected a table")
            _check_keys(name, table, data[table], keys)
        if kind == "boot" and "secrets" in data:
            raise ProvisionError(name, "secrets", f"the password goes in {SECRETS_NAME}, which is removed once read")
        if kind == "network" and set(data.get("provisioning", {})) - NETWORK_PROVISIONING_KEYS:
            key = sorted(set(data["provisioning"]) - NETWORK_PROVISIONING_KEYS)[0]
            raise ProvisionError(name, f"provisioning.{key}", f"set only in the boot partition's {SETTINGS_NAME}")
        device = data.get("device", {})
        if "hostname" in device:
            _check_hostname(name, device["hostname"])
        if "ssh_authorized_keys" in device:
            keys = device["ssh_authorized_keys"]
            if not isinstance(keys, list) or not all(isinstance(k, str) and _SSH_KEY.match(k) for k in keys):
                raise ProvisionError(name, "device.ssh_authorized_keys", 'expected a list of public keys ("ssh-ed25519 AAAA...")')
        prov = data.get("provisioning", {})
        if "url" in prov:
            url = prov["url"]
            parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
            if parts is None or parts.scheme != "https" or not parts.hostname:
                raise ProvisionError(name, "provisioning.url", "expected an https:// URL")
        if "ca_file" in prov and not isinstance(prov["ca_file"], str):
            raise ProvisionError(name, "provisioning.ca_file", "expected a file name on the boot partition")
        if "version" in prov and not (isinstance(prov["version"], str) and re.fullmatch(r"[\w.+~-]{1,64}", prov["version"])):
            raise ProvisionError(name, "provisioning.version", 'expected a software version ("1.4.0+20261201")')
        if "bundle_url" in prov and not (isinstance(prov["bundle_url"], str) and prov["bundle_url"]):
            raise ProvisionError(name, "provisioning.bundle_url", "expected the bundle's https:// URL (or a path below url)")
        if "wifi_ssid" in device:
            ssid = device["wifi_ssid"]
            if not isinstance(ssid, str) or not 1 <= len(ssid.encode()) <= 32:
                raise ProvisionError(name, "device.wifi_ssid", "expected a network name of 1 to 32 bytes")
        if "wifi_country" in device:
            if not isinstance(device["wifi_country"], str) or not re.fullmatch(r"[A-Z]{2}", device["wifi_country"]):
                raise ProvisionError(name, "device.wifi_country", 'expected a two-letter country code ("DE")')
        if "secrets" in data:
            password = data["secrets"].get("password")
            if "password" in data["secrets"] and (not isinstance(password, str) or not password):
                raise ProvisionError(name, "secrets.password", "expected a non-empty string")
            if "wifi_psk" in data["secrets"]:
                _check_psk(name, "secrets.wifi_psk", data["secrets"]["wifi_psk"])
        account = data.get("account")
        if isinstance(account, dict) and "secrets_file" in account:
            raise ProvisionError(name, "account.secrets_file", "set by provisioning (the password is installed for you)")
        return Layer(name, raw, data)

    def _apply(self, boot: Layer, network: list[Layer]) -> Result:
        """Validate the layers' configuration with the phone's checker and install it when it differs."""
        p = self.paths
        layers = [boot, *network]
        digest = _digest([layer.raw for layer in layers], _read(p.pending_secrets))
        installed = p.config.is_file() and p.secrets.is_file()
        if installed and _read(p.applied) == digest.encode():
            return Result("unchanged", f"{_names(layers)}: no change")
        merged: dict[str, Any] = {}
        for layer in layers:
            _merge(merged, layer.data)
        own = {table: merged.pop(table, {}) for table in OWN_TABLES}
        password = own["secrets"].get("password") or _password_in(_read(p.pending_secrets)) or _password_in(_read(p.secrets))
        if not password:
            raise ProvisionError(str(p.boot / SECRETS_NAME), "password", 'not found: write password = "..." in it')
        ca_raw = None
        if "ca_file" in own["provisioning"]:
            ca_path = p.boot / own["provisioning"]["ca_file"]
            if ca_path.is_file():
                ca_raw = ca_path.read_bytes()
            elif p.ca_copy.is_file():
                ca_raw = p.ca_copy.read_bytes()
            else:
                raise ProvisionError(boot.name, "provisioning.ca_file", f"file not found: {ca_path}")
        header = f"# Written by firmware-provision from {_names(layers)}: edit that, not this file.\n"
        config_text = (header + dumps(merged)).encode()
        secrets_text = _secrets_text(password).encode()

        # The phone's user reads the configuration: its folder is 0755 whatever the caller's umask.
        p.etc.mkdir(parents=True, exist_ok=True)
        p.etc.chmod(0o755)
        stage = Path(tempfile.mkdtemp(prefix=".provision-", dir=p.etc))
        try:
            staged_config, staged_secrets = stage / "config.toml", stage / "secrets.toml"
            _write_file(staged_secrets, secrets_text, 0o600)
            _write_file(staged_config, config_text, 0o644)
            self._check(staged_config, layers)
            changed = _read(p.config) != config_text or _read(p.secrets) != secrets_text
            if changed:
                # The secret first: a new configuration never starts with an old password file missing.
                os.replace(staged_secrets, p.secrets)
                os.replace(staged_config, p.config)
                _fsync_dir(p.etc)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        # Only now is the boot file the last good one.
        _write_private(p.boot_copy, boot.raw)
        _write_private(p.ca_copy, ca_raw)
        psk = own["secrets"].get("wifi_psk") or _toml_value(_read(p.pending_secrets), "wifi_psk")
        if psk:
            _write_private(p.wifi_psk, psk.encode())
        p.pending_secrets.unlink(missing_ok=True)
        _write_private(p.applied, _digest([layer.raw for layer in layers], None).encode())
        hostname = own["device"].get("hostname")
        if hostname:
            self._set_hostname(hostname.lower())
        if "ssh_authorized_keys" in own["device"]:
            self._set_ssh_keys(own["device"]["ssh_authorized_keys"])
        self._set_wifi(own["device"].get("wifi_ssid"), own["device"].get("wifi_country"))
        what = f"installed {p.config} from {_names(layers)}" if changed else f"{_names(layers)}: no change"
        return Result("applied" if changed else "unchanged", what)

    def _check(self, staged_config: Path, layers: list[Layer]) -> None:
        env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
        try:
            done = subprocess.run(
                [*self.check_config, "check-config", str(staged_config)],
                capture_output=True, text=True, env=env, timeout=120, check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ProvisionError(self.check_config[0], "", f"the configuration checker did not run: {e}") from None
        if done.returncode == 0:
            return
        lines = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()
        line = lines[-1].removeprefix("firmware-app: ")
        # The checker names the staged copy: name the files a person edits instead.
        line = line.replace(str(staged_config), _names(layers))
        line = line.replace(str(staged_config.parent / "secrets.toml"), str(self.paths.boot / SECRETS_NAME))
        raise _Checked(line)

    def _set_hostname(self, name: str) -> None:
        p = self.paths
        if _read(p.hostname).strip() != name.encode():
            _write_file(p.hostname, f"{name}\n".encode(), 0o644)
        lines = _read(p.hosts).decode().splitlines() or ["127.0.0.1\tlocalhost", "::1\t\tlocalhost ip6-localhost ip6-loopback"]
        others = [line for line in lines if not re.match(r"127\.0\.1\.1\s", line)]
        at = next((i + 1 for i, line in enumerate(others) if line.startswith("127.0.0.1")), 0)
        others.insert(at, f"127.0.1.1\t{name}")
        if others != lines:
            _write_file(p.hosts, ("\n".join(others) + "\n").encode(), 0o644)
        if self.live_hostname and socket.gethostname() != name:
            try:
                socket.sethostname(name)
            except OSError as e:
                print(f"firmware-provision: hostname {name} is set for the next boot (now: {e})", file=sys.stderr)

    def _set_ssh_keys(self, keys: list[str]) -> None:
        ssh = self.paths.root / "root/.ssh"
        ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
        text = "".join(f"{k.strip()}\n" for k in keys).encode()
        if _read(ssh / "authorized_keys") != text:
            _write_file(ssh / "authorized_keys", text, 0o600)

    def _set_wifi(self, ssid: str | None, country: str | None) -> None:
        """wpa_supplicant's configuration for wlan0 (wpa_supplicant@wlan0 starts when it exists)."""
        conf = self.paths.wpa_conf
        if not ssid:
            conf.unlink(missing_ok=True)
            return
        psk = _read(self.paths.wifi_psk).decode()
        # The network name in hex and the key as its PBKDF2 hash: no quoting, and no passphrase in the file.
        lines = ["ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev", "update_config=0"]
        if country:
            lines.append(f"country={country}")
        lines += ["network={", f"    ssid={ssid.encode().hex()}", "    scan_ssid=1"]
        if psk:
            key = psk if re.fullmatch(r"[0-9a-fA-F]{64}", psk) else hashlib.pbkdf2_hmac(
                "sha1", psk.encode(), ssid.encode(), 4096, 32).hex()
            lines += ["    key_mgmt=WPA-PSK", f"    psk={key}"]
        else:
            lines.append("    key_mgmt=NONE")
        lines.append("}")
        text = ("\n".join(lines) + "\n").encode()
        conf.parent.mkdir(parents=True, exist_ok=True)
        if _read(conf) != text:
            _write_file(conf, text, 0o600)

    def _last_good_network(self) -> list[Layer]:
        p = self.paths
        layers = []
        for path in (p.net_common, p.net_device):
            if path.is_file():
                layers.append(self._parse_layer(f"{path} (last good)", path.read_bytes(), "network"))
        return layers

    def mac(self) -> str:
        """This device's MAC address as 12 lowercase hex digits: the wired interface first, then wireless."""
        if self._mac:
            return _normal_mac(self._mac)
        try:
            names = sorted(n.name for n in self.paths.sys_net.iterdir() if (n / "device").exists())
        except FileNotFoundError:
            names = []
        names.sort(key=lambda n: (not n.startswith("e"), not n.startswith("w"), n))
        for name in names:
            address = _read(self.paths.sys_net / name / "address").decode().strip()
            if address and address != "00:00:00:00:00:00":
                return _normal_mac(address)
        raise ProvisionError(str(self.paths.sys_net), "", "no network interface with a MAC address")

    def _finish(self, mode: str, result: Result) -> Result:
        status = {"time": self._now().isoformat(timespec="seconds"), "mode": mode,
                  "outcome": result.outcome, "message": result.message}
        previous = _load_json(self.paths.status)
        previous[mode] = status
        _write_private(self.paths.status, (json.dumps(previous, indent=2) + "\n").encode())
        return result


class _Checked(ProvisionError):
    """The phone's checker refused the configuration; its line is already ``FILE: KEY: expectation``."""

    def __init__(self, line: str) -> None:
        Exception.__init__(self, line)
        self.file, self.key, self.message = line, "", ""


# --- fetching ---------------------------------------------------------------------------------------------


def fetch(url: str, ca_file: Path | None, mac: str, timeout: float = FETCH_TIMEOUT_S) -> bytes | None:
    """GET ``url`` over HTTPS with certificate and host name verification; None when it does not exist."""
    if urllib.parse.urlsplit(url).scheme != "https":
        raise ProvisionError(url, "", "only https:// URLs are fetched")
    request = urllib.request.Request(url, headers={"User-Agent": f"firmware-provision ({mac})"})
    try:
        with https.opener(ca_file).open(request, timeout=timeout) as response:
            body = response.read(MAX_FETCH_BYTES + 1)
    except https.InsecureRedirect as e:
        raise ProvisionError(url, "", f"redirected to a non-HTTPS URL ({e.target}): refused") from None
    except urllib.error.HTTPError as e:
        if e.code in (404, 410):
            return None
        raise ProvisionError(url, "", f"the server answered {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise ProvisionError(url, "", f"cannot be fetched: {e.reason}") from None
    except (OSError, ssl.SSLError) as e:
        raise ProvisionError(url, "", f"cannot be fetched: {e}") from None
    if len(body) > MAX_FETCH_BYTES:
        raise ProvisionError(url, "", f"larger than {MAX_FETCH_BYTES} bytes")
    return body


# --- TOML out ---------------------------------------------------------------------------------------------


def dumps(data: dict[str, Any]) -> str:
    """``data`` as TOML: tomli-w writes it (the standard library only reads TOML), a dependency of the
    phone's venv, whose Python runs this script."""
    return tomli_w.dumps(data)


# --- small helpers ----------------------------------------------------------------------------------------


def _parse_toml(name: str, raw: bytes) -> dict[str, Any]:
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProvisionError(name, "", "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ProvisionError(name, "", f"not valid TOML: {e}") from None


def _check_keys(name: str, table: str, data: dict[str, Any], allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            where = f"{table}.{key}" if table else key
            raise ProvisionError(name, where, f"unknown key (expected one of: {', '.join(sorted(allowed))})")


_SSH_KEY = re.compile(r"^(ssh-|ecdsa-|sk-)[\w@.-]+ [A-Za-z0-9+/=]+( .*)?$")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _check_hostname(name: str, value: Any) -> None:
    if not isinstance(value, str) or len(value) > 64 or not all(_LABEL.fullmatch(x) for x in value.split(".")):
        raise ProvisionError(name, "device.hostname", "expected a host name (letters, digits and '-', at most 64)")


def _merge(into: dict[str, Any], layer: dict[str, Any]) -> None:
    """Tables merge key by key; any other value (arrays too) is replaced by the later layer's."""
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = _copy(value)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _secrets_text(password: str) -> str:
    return tomli_w.dumps({"password": password})


def _password_in(raw: bytes) -> str | None:
    return _toml_value(raw, "password")


def _toml_value(raw: bytes, key: str) -> str | None:
    try:
        value = tomllib.loads(raw.decode()).get(key)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    return value if isinstance(value, str) and value else None


def _check_psk(name: str, key: str, value: Any) -> None:
    if not isinstance(value, str) or not (
        8 <= len(value) <= 63 and value.isascii() and value.isprintable() or re.fullmatch(r"[0-9a-fA-F]{64}", value)
    ):
        raise ProvisionError(name, key, "expected a WPA passphrase of 8 to 63 characters (or 64 hex digits)")


def _digest(raws: list[bytes], pending: bytes | None) -> str:
    h = hashlib.sha256()
    for raw in raws:
        h.update(hashlib.sha256(raw).digest())
    if pending:
        h.update(b"pending" + hashlib.sha256(pending).digest())
    return h.hexdigest()


def _names(layers: list[Layer]) -> str:
    return " + ".join(layer.name for layer in layers)


def _join(problems: list[str], *more: str) -> str:
    return "; ".join([*problems, *(m for m in more if m)])


def _normal_mac(mac: str) -> str:
    digits = re.sub(r"[^0-9a-fA-F]", "", mac).lower()
    if len(digits) != 12:
        raise ProvisionError("MAC address", "", f"expected 12 hex digits, got {mac!r}")
    return digits


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _load_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _mkdir_private(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


def _write_private(path: Path, data: bytes | None) -> None:
    """Write (or, for None, remove) a state file that only root reads."""
    if data is None:
        path.unlink(missing_ok=True)
        return
    _mkdir_private(path.parent)
    _write_file(path, data, 0o600)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Atomically replace ``path`` with ``data``, owned by root (when we are root) with ``mode``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            if os.geteuid() == 0:
                os.fchown(f.fileno(), 0, 0)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remove_secret_file(path: Path) -> None:
    """Overwrite, then delete: FAT has no permissions, the card may be read by any computer."""
    try:
        size = path.stat().st_size
        with path.open("r+b") as f:
            f.write(b"\0" * size)
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        pass  # removing it still matters more
    path.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _default_checker() -> str:
    sibling = Path(sys.executable).with_name("firmware-app")
    return str(sibling) if sibling.exists() else "firmware-app"


# --- command line -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="firmware-provision", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="/", help="root folder to provision (default: /)")
    parser.add_argument("--check-config", help="the phone's command (default: firmware-app beside this Python)")
    parser.add_argument("--mac", help="MAC address to use instead of the network interface's")
    parser.add_argument(
        "--restart-command",
        help=f"command run after the network installed a new configuration (default on /: {shlex.join(DEFAULT_RESTART)})",
    )
    parser.add_argument("command", choices=["boot", "network", "status"])
    args = parser.parse_args(argv)

    restart_cmd = shlex.split(args.restart_command) if args.restart_command else (
        list(DEFAULT_RESTART) if Path(args.root).resolve() == Path("/") else None
    )
    restart = (lambda: subprocess.run(restart_cmd, check=False)) if restart_cmd else None
    on_device = Path(args.root).resolve() == Path("/")
    start_update = (lambda: subprocess.run(DEFAULT_START_UPDATE, check=False)) if on_device else None
    provisioner = Provisioner(
        args.root,
        check_config=shlex.split(args.check_config) if args.check_config else (),
        restart=restart,
        start_update=start_update,
        mac=args.mac,
    )
    if args.command == "status":
        print(json.dumps(_load_json(provisioner.paths.status), indent=2))
        return 0
    result = provisioner.boot() if args.command == "boot" else provisioner.network()
    if result.ok:
        print(f"firmware-provision: {result.outcome}: {result.message}")
        return 0
    print(f"firmware-provision: {result.message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
