"""Software updates: a signed RAUC bundle installed into the other root slot, never during a call.

The SD image has two root slots (A and B) and a data partition (image/README.md). An update is a RAUC bundle
of a whole root file system, signed with the operator's key. :class:`Updater` takes one from a file, an HTTPS
URL, a USB stick or the provisioning server's wanted version, and:

1. fetches it into the data partition (HTTPS with verification; Debian's RAUC cannot stream);
2. checks it with ``rauc info``: the signature against the device's keyring, its format, and that it is
   for this hardware (the ``compatible``, which names the architecture): a refused bundle is said in one line;
3. waits until the phone has no call (polling the phone's control socket), up to a deadline;
4. runs ``rauc install``, which writes the other slot and makes it the one to boot;
5. reboots once the phone is idle again (a call that started meanwhile is never cut).

The new slot is marked good only when the phone works there (``firmware-app health``, run by
firmware-app-health.service); otherwise U-Boot's boot counter falls back to this slot. What happened is kept
in ``/var/lib/firmware-update/status.json``, and a version that fell back is not installed again from the
provisioning server or a USB stick (only by hand).
"""

from __future__ import annotations

import configparser
import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_app import control, https
from firmware_app.state import load_state, save_state
from firmware_app.errors import FirmwareAppError, NoAnswerError

log = logging.getLogger(__name__)

STATE_DIR = Path("/var/lib/firmware-update")
VERSION_FILE = Path("/usr/lib/firmware-app/image-version")
SYSTEM_CONF = Path("/etc/rauc/system.conf")
PROVISIONING_CA = Path("/var/lib/firmware-provision/provisioning-ca.pem")
#: Largest bundle fetched: a whole root file system is 0.5 to 1 GB.
MAX_BUNDLE_BYTES = 4 << 30
FETCH_TIMEOUT_S = 60.0  # without a byte from the server
IDLE_DEADLINE_S = 3600.0  # how long an update waits for a call to end before it gives up, unchanged
REBOOT_WAIT_S = 12 * 3600.0  # once installed, the reboot waits this long at most for a call to end
POLL_S = 2.0
#: Registration failures that PJSIP makes itself (no answer, no transport): the registrar said nothing.
LOCAL_FAILURES = frozenset({0, 408, 477, 503})
#: The update's states the phone shows (its status LED, the fleet's telemetry); any other clears it.
SHOWN = frozenset({"downloading", "copying", "checking", "installing", "installed", "rebooting"})


class UpdateRefused(FirmwareAppError):
    """The bundle is not one this phone installs (signature, format, hardware, version): why, in one line."""


class UpdateDeferred(FirmwareAppError):
    """The phone stayed in a call past the deadline: nothing was changed."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    compatible: str
    version: str


@dataclass
class Device:
    """Where the update's parts are on this device (a temporary folder and stand-in commands in tests)."""

    state_dir: Path = STATE_DIR
    version_file: Path = VERSION_FILE
    system_conf: Path = SYSTEM_CONF
    socket: str = "/run/firmware-app/control.sock"
    rauc: Sequence[str] = ("rauc",)
    reboot: Sequence[str] = ("systemctl", "reboot")
    mount: Sequence[str] = ("mount", "-o", "ro,nosuid,nodev,noexec")
    umount: Sequence[str] = ("umount",)
    run: Callable[..., subprocess.CompletedProcess[str]] = field(default=subprocess.run, repr=False)

    @property
    def status_file(self) -> Path:
        return self.state_dir / "status.json"

    @property
    def wanted_file(self) -> Path:
        return self.state_dir / "wanted.json"

    def running_version(self) -> str:
        try:
            return self.version_file.read_text().strip()
        except OSError:
            return ""

    def compatible(self) -> str:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(self.system_conf.read_text())
        except (OSError, configparser.Error) as e:
            raise FirmwareAppError(f"{self.system_conf}: cannot be read ({e}): is this an A/B image?") from None
        compatible = parser.get("system", "compatible", fallback="")
        if not compatible:
            raise FirmwareAppError(f"{self.system_conf}: [system] compatible is missing")
        return compatible


class Updater:
    """One update, from wherever it comes, with its status kept in the data partition."""

    def __init__(
        self,
        device: Device | None = None,
        *,
        idle_deadline_s: float = IDLE_DEADLINE_S,
        reboot_wait_s: float = REBOOT_WAIT_S,
        reboot: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.device = device or Device()
        self.idle_deadline_s = idle_deadline_s
        self.reboot_wait_s = reboot_wait_s
        self.reboot = reboot
        self._clock = clock
        self._sleep = sleep
        self._say = say or (lambda line: print(f"firmware-update: {line}", flush=True))
        self._status: dict[str, Any] | None = None  # status.json as last read or written

    @property
    def status(self) -> dict[str, Any]:
        """What the last update did (status.json), read once."""
        if self._status is None:
            self._status = load_state(self.device.status_file, "update")
        return self._status

    # -- the ways an update comes ------------------------------------------------------------------------

    def install(self, source: str, *, ca_file: Path | None = None, force: bool = False) -> str:
        """Install the bundle at ``source`` (a file or an https:// URL), by hand: any signed, compatible one."""
        self.reconcile()
        path = self.fetch(source, ca_file)
        return self._install(path, source, force=force, remove_after=path != Path(source))

    def install_wanted(self) -> str:
        """Install the provisioning server's wanted version (wanted.json), unless it runs or fell back before."""
        self.reconcile()
        wanted = load_state(self.device.wanted_file, "update")
        version, url = wanted.get("version"), wanted.get("url")
        if not version or not url:
            return self._set("nothing", f"no wanted version in {self.device.wanted_file}")
        if (settled := self._settled(version)) is not None:
            return settled
        ca = Path(wanted["ca_file"]) if wanted.get("ca_file") else None
        path = self.fetch(url, ca)
        return self._install(path, url, expect_version=version, remove_after=True)

    def install_from_usb(self, device_node: str) -> str:
        """Install the newest ``*.raucb`` at the top of a USB stick's file system, once per version.

        A stick left in (every boot finds it again) costs a look at its bundle: it is copied to the data
        partition only when its version is to be installed.
        """
        self.reconcile()
        mountpoint = Path(tempfile.mkdtemp(prefix="usb-", dir=self._runtime_dir()))
        copy = self.device.state_dir / "usb.raucb"
        try:
            self._command([*self.device.mount, device_node, str(mountpoint)], f"mounting {device_node}")
            try:
                bundles = sorted(mountpoint.glob("*.raucb"), key=lambda p: (p.stat().st_mtime, p.name))
                if not bundles:
                    return self._set("nothing", f"{device_node}: no *.raucb at the top of the stick")
                chosen = bundles[-1]
                if (settled := self._settled(self.check(chosen).version, f" (on {device_node})")) is not None:
                    return settled
                self._set("copying", f"{chosen.name} from {device_node}")
                shutil.copyfile(chosen, copy)  # the stick may be pulled out during the install
            finally:
                self._command([*self.device.umount, str(mountpoint)], f"unmounting {device_node}", check=False)
        finally:
            with contextlib.suppress(OSError):
                mountpoint.rmdir()  # only when it is empty again: never remove a stick's files
        return self._install(copy, f"{device_node}:{chosen.name}", remove_after=True)

    # -- the steps --------------------------------------------------------------------------------------

    def fetch(self, source: str, ca_file: Path | None = None) -> Path:
        """A local path for ``source``: the file itself, or an HTTPS download into the data partition."""
        scheme = urllib.parse.urlsplit(source).scheme
        if not scheme:
            path = Path(source)
            if not path.is_file():
                raise UpdateRefused(f"{source}: no such file")
            return path
        if scheme != "https":
            raise UpdateRefused(f"{source}: only https:// URLs are fetched (the bundle is signed, the way to it is verified too)")
        self._set("downloading", source)  # which makes the state folder
        target = self.device.state_dir / "download.raucb"
        size = download(source, target, ca_file)
        self._say(f"downloaded {size} bytes")
        return target

    def check(self, path: Path) -> Bundle:
        """The bundle's version, if its signature, format and hardware are right; UpdateRefused otherwise."""
        proc = self.device.run(
            [*self.device.rauc, "info", "--output-format=json", f"--conf={self.device.system_conf}", str(path)],
            capture_output=True, text=True, timeout=600,
        )
        if proc.returncode != 0:
            raise UpdateRefused(f"{path.name}: refused: {rauc_reason(proc.stderr or proc.stdout)}")
        try:
            info = json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise UpdateRefused(f"{path.name}: rauc info gave no JSON: {proc.stdout[:200]!r}") from None
        bundle = Bundle(path, str(info.get("compatible", "")), str(info.get("version", "")))
        ours = self.device.compatible()
        if bundle.compatible != ours:
            raise UpdateRefused(
                f"{path.name}: refused: the bundle is for {bundle.compatible!r}, this phone is {ours!r}"
            )
        return bundle

    def wait_for_idle(self, deadline_s: float, why: str) -> bool:
        """True once the phone has no call (or is not running); False when ``deadline_s`` passed in a call."""
        start = self._clock()
        said = False
        while True:
            state = phone_state(self.device.socket)
            if state in (None, "idle"):
                return True
            if not said:
                self._set("waiting", f"the phone is {state.replace('_', ' ')}: {why} when the call ends")
                said = True
            if self._clock() - start >= deadline_s:
                return False
            self._sleep(POLL_S)

    # -- the rest ---------------------------------------------------------------------------------------

    def reconcile(self) -> dict[str, Any]:
        """After a reboot into a new slot: say whether it came up (``updated``) or fell back (``fell-back``)."""
        status = self.status
        if status.get("state") != "rebooting":
            return status
        version, running = status.get("version", ""), self.device.running_version()
        if version and version == running:
            self._set("updated", f"version {version} runs", version=version)
        else:
            fell_back = [*status.get("fell_back", []), version]
            self._set(
                "fell-back", f"version {version} did not come up: back on {running or 'the previous slot'}",
                version=version, fell_back=fell_back[-10:],
            )
        return self.status

    def _settled(self, version: str, where: str = "") -> str | None:
        """Why ``version`` is not installed unattended (it runs, or it fell back before), said; None otherwise."""
        running = self.device.running_version()
        if version == running:
            return self._set("current", f"version {version}{where} already runs", version=version)
        if version in self.status.get("fell_back", []):
            return self._set("not-retried", f"version {version}{where} did not come up before; staying on {running}",
                             version=version)
        return None

    def _install(
        self, path: Path, source: str, *, expect_version: str = "", force: bool = False,
        remove_after: bool = False,
    ) -> str:
        try:
            self._set("checking", source)
            bundle = self.check(path)
            running = self.device.running_version()
            if expect_version and bundle.version != expect_version:
                raise UpdateRefused(
                    f"{source}: refused: the bundle is version {bundle.version}, provisioning wants {expect_version}"
                )
            if bundle.version == running and not force:
                return self._set("current", f"version {running} already runs (--force installs it again)",
                                 version=running)
            if not self.wait_for_idle(self.idle_deadline_s, f"version {bundle.version} installs"):
                raise UpdateDeferred(
                    f"the phone was in a call for {self.idle_deadline_s:g} s: version {bundle.version} not installed"
                )
            self._set("installing", f"version {bundle.version} from {source}", version=bundle.version)
            self._rauc_install(bundle.path)
        except FirmwareAppError as e:
            state = "refused" if isinstance(e, UpdateRefused) else "deferred" if isinstance(e, UpdateDeferred) else "failed"
            self._set(state, str(e), keep_history=True)
            raise
        finally:
            if remove_after:
                path.unlink(missing_ok=True)
        self._set("installed", f"version {bundle.version} is in the other slot", version=bundle.version)
        if not self.reboot:
            return f"version {bundle.version} installed: it runs after the next reboot"
        if not self.wait_for_idle(self.reboot_wait_s, "the phone restarts into the new version"):
            self._set("installed", f"version {bundle.version} is in the other slot; the phone stayed in a call for "
                      f"{self.reboot_wait_s:g} s: it starts at the next reboot", version=bundle.version)
            raise UpdateDeferred(f"version {bundle.version} installed, not started: the phone stayed in a call")
        self._set("rebooting", f"into version {bundle.version}", version=bundle.version)
        self._command([*self.device.reboot], "rebooting", check=False)
        return f"version {bundle.version} installed: rebooting"

    def _rauc_install(self, path: Path) -> None:
        proc = self.device.run([*self.device.rauc, "install", str(path)], capture_output=True, text=True,
                               timeout=3600)
        for line in (proc.stdout or "").splitlines():
            if line.strip():
                log.info("rauc: %s", line.strip())
        if proc.returncode != 0:
            raise FirmwareAppError(f"rauc install failed: {rauc_reason(proc.stderr or proc.stdout)}")

    def _command(self, argv: list[str], what: str, *, check: bool = True) -> None:
        proc = self.device.run(argv, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 and check:
            raise FirmwareAppError(f"{what} failed: {(proc.stderr or proc.stdout).strip() or proc.returncode}")

    def _runtime_dir(self) -> Path:
        run = Path(os.environ.get("RUNTIME_DIRECTORY", self.device.state_dir / "run"))
        _ensure_dir(run)
        return run

    def _set(
        self, state: str, message: str, *, version: str | None = None, fell_back: list[str] | None = None,
        keep_history: bool = False,
    ) -> str:
        """Keep ``state`` in status.json (with the history of versions that fell back) and say it."""
        previous = self.status
        record: dict[str, Any] = {
            "state": state,
            "message": message,
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "running": self.device.running_version(),
        }
        if version is not None:
            record["version"] = version
        elif keep_history and previous.get("version"):
            record["version"] = previous["version"]
        history = fell_back if fell_back is not None else previous.get("fell_back", [])
        if history:
            record["fell_back"] = history
        _ensure_dir(self.device.state_dir)
        save_state(self.device.status_file, record, "update")
        self._status = record
        self._say(f"{state}: {message}")
        tell_phone(self.device.socket, state if state in SHOWN else "", message)
        return message


# --- the phone, as the update sees it -------------------------------------------------------------------


def phone_state(socket: str) -> str | None:
    """The phone's state ("idle", "in_call"...), or None when it is not running."""
    try:
        reply = control.request(socket, {"cmd": "status"}, timeout=10.0)
    except NoAnswerError:
        return None
    return str(reply.get("result", {}).get("state", "unknown")) if reply.get("ok") else "unknown"


def tell_phone(socket: str, state: str, detail: str) -> None:
    """Say what the update does to the running phone (its LED shows it), if it runs; never in the way."""
    try:
        control.request(socket, {"cmd": "update", "state": state, "detail": detail}, timeout=5.0)
    except FirmwareAppError:
        pass  # not running, or gone: the update goes on without the LED


def health(
    socket: str, wait_s: float, *, clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[bool, str]:
    """Whether the phone works: its engine runs and the registrar answered its REGISTER, within ``wait_s``.

    A registrar's refusal (403, 404...) counts: the software works and a configuration mistake is not fixed by
    going back to the old slot. PJSIP's own failures (408 no answer, 503 no transport) do not.
    """
    deadline = clock() + wait_s
    why = "the phone has not answered yet"
    while True:
        try:
            reply = control.request(socket, {"cmd": "status"}, timeout=max(1.0, min(10.0, deadline - clock())))
            status = reply.get("result") or {}
            reg = status.get("registration") or {}
            state, code, reason = reg.get("state", ""), int(reg.get("code") or 0), reg.get("reason", "")
            if not (status.get("engine") or {}).get("alive"):
                why = "the SIP engine is not running"
            elif state == "registered":
                return True, f"registered ({reg.get('uri', '')})"
            elif state == "failed" and code not in LOCAL_FAILURES:
                return True, f"the registrar answered {code} {reason}".rstrip()
            else:
                why = f"registration {state or 'unknown'}" + (f" ({code} {reason})".rstrip() if code else "")
        except NoAnswerError as e:
            why = str(e)
        if clock() >= deadline:
            return False, f"not healthy after {wait_s:g} s: {why}"
        sleep(1.0)


# --- fetching and small helpers ------------------------------------------------------------------------


def download(url: str, target: Path, ca_file: Path | None, timeout: float = FETCH_TIMEOUT_S,
             limit: int = MAX_BUNDLE_BYTES) -> int:
    """GET ``url`` over verified HTTPS into ``target`` (whole or not at all); the number of bytes."""
    partial = target.with_name(target.name + ".part")
    size = 0
    try:
        with https.opener(ca_file).open(url, timeout=timeout) as response, partial.open("wb") as out:
            while chunk := response.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise UpdateRefused(f"{url}: larger than {limit} bytes")
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except https.InsecureRedirect as e:
        raise UpdateRefused(str(e)) from None
    except urllib.error.HTTPError as e:
        raise FirmwareAppError(f"{url}: the server answered {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise FirmwareAppError(f"{url}: cannot be fetched: {e.reason}") from None
    except (OSError, ssl.SSLError) as e:
        raise FirmwareAppError(f"{url}: cannot be fetched: {e}") from None
    finally:
        if size == 0 or not partial.exists() or partial.stat().st_size != size:
            partial.unlink(missing_ok=True)
    partial.replace(target)
    return size


def rauc_reason(output: str) -> str:
    """RAUC's error in one line: its last line that is not one of its progress messages (``rauc-Message:``).

    E.g. "signature verification failed: Verify error: self-signed certificate", "Bundle format 'plain' not
    allowed", "Invalid bundle format: ...".
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if not line.startswith("rauc-Message:")]
    return (errors or lines or ["no reason given"])[-1]


def _ensure_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o750)
