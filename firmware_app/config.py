"""The phone's configuration: one TOML file, a separate secrets file, and one clear line per mistake.

msgspec does the type checking (it is small, fast and reports the path of a bad value); this module turns
its reports into ``FILE: KEY: what was expected``. Plugins own the top-level tables they ask for through
:meth:`Config.section`; a table that nobody asked for is reported, so a misspelt section never goes unseen.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta

from firmware_app.errors import ConfigError

T = TypeVar("T")

DEFAULT_PATH = Path("/etc/firmware-app/config.toml")
#: Name of the systemd credential (LoadCredential=) that may hold the secrets instead of a file.
CREDENTIAL_NAME = "firmware-app-secrets"

Port = Annotated[int, Meta(ge=0, le=65535)]


class _Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Base of every configuration table: unknown keys are mistakes."""


class Account(_Table):
    registrar: Annotated[str, Meta(min_length=1)]  # "pbx.example", "pbx.example:5070" or "sip:pbx.example"
    user: Annotated[str, Meta(min_length=1)]
    # Other request-URI users that ring this phone (an extension number, a tel: number like "+15551234").
    aliases: list[Annotated[str, Meta(min_length=1, max_length=63, pattern=r"^[^\s@;:<>]+$")]] = []
    secondary_registrar: str = ""  # tried when the registrar does not answer
    auth_user: str = ""  # defaults to user
    display_name: str = ""
    domain: str = ""  # the account's SIP domain; defaults to the registrar's host[:port]
    transport: Literal["udp", "tcp", "tls"] = "udp"
    local_port: Port = 5060  # 0 lets the system choose
    bind_address: str = ""  # empty: every address
    reg_expiry: Annotated[int, Meta(ge=10, le=86400)] = 300
    # After a failed registration: retry every retry_interval while the registrar is unreachable; after
    # an authentication failure back off, doubling up to retry_max.
    retry_interval: Annotated[int, Meta(ge=1, le=3600)] = 30
    retry_max: Annotated[int, Meta(ge=1, le=86400)] = 300
    reject_code: Annotated[int, Meta(ge=400, le=699)] = 486
    mwi_subscribe: bool = False  # SUBSCRIBE to message-summary; PBXs that send MWI unsolicited need not
    secrets_file: str = "secrets.toml"  # relative to the configuration file's folder


class Logging(_Table):
    level: Literal["debug", "info", "warning", "error"] = "info"
    sip_trace: bool = False  # log every SIP message (passwords are never in them: digest only)
    pjsip_level: Annotated[int, Meta(ge=0, le=6)] = 1


class Plugins(_Table):
    disable: list[str] = []  # plugin names not to load
    only: list[str] | None = None  # when set, load just these (tests, minimal devices)
    modules: list[str] = []  # extra plugins by import name ("package.module" or "package.module:Class")


class Control(_Table):
    socket: str = "/run/firmware-app/control.sock"


class Audio(_Table):
    """The call's sound devices, opened by PJSUA2 (the mixer and ring tones are the audio plugin's)."""

    capture_device: str = "default"  # ALSA name, or part of its description or card's name ("Jabra")
    playback_device: str = "default"
    clock_rate: Annotated[int, Meta(ge=8000, le=48000)] = 16000
    snd_clock_rate: Annotated[int, Meta(ge=0, le=48000)] = 0  # 0: same as clock_rate; 48000 for 48 kHz-only USB headsets
    ec_tail_ms: Annotated[int, Meta(ge=0, le=500)] = 0  # echo canceller; 0 (off) for a headset: no echo path
    capture_latency_ms: Annotated[int, Meta(ge=10, le=1000)] = 100  # ALSA buffer lengths (PJSIP's defaults)
    playback_latency_ms: Annotated[int, Meta(ge=10, le=1000)] = 140


class Security(_Table):
    # Who may ring the phone: addresses, networks (CIDR) or host names. Empty: the registrar's addresses.
    trusted_sources: list[str] = []
    # Hosts a far end may transfer this phone to with a REFER. Empty: the account's domain only.
    transfer_domains: list[str] = []
    tls_verify_server: bool = True
    tls_ca_file: str = ""  # empty: the system's CA bundle
    srtp: Literal["disabled", "optional", "mandatory"] = "disabled"  # mandatory refuses plain RTP with 488


class Calls(_Table):
    # A second call while in a call rings as a waiting call (answer holds the first); off: refused busy (486).
    call_waiting: bool = True


class Core(_Table):
    """The tables the core reads itself."""

    account: Account
    calls: Calls = Calls()
    logging: Logging = Logging()
    plugins: Plugins = Plugins()
    control: Control = Control()
    audio: Audio = Audio()
    security: Security = Security()


_CORE_SECTIONS = frozenset(f for f in Core.__struct_fields__)


class Config:
    """A loaded configuration: the core's tables typed, plugins' tables handed out by name."""

    def __init__(self, path: Path, raw: dict[str, Any], core: Core, password: str) -> None:
        self.path = path
        self.raw = raw
        self.account = core.account
        self.calls = core.calls
        self.logging = core.logging
        self.plugins = core.plugins
        self.control = core.control
        self.audio = core.audio
        self.security = core.security
        self._password = password
        self.secrets: dict[str, str] = {}  # plugins' secrets from the secrets file (mqtt_password)
        self.secrets_loaded = True  # False when loaded without them (check-config, doctor as any user)
        self._claimed: set[str] = set(_CORE_SECTIONS)
        #: Names of every action the loaded plugins offer, once they are loaded (None before).
        self.known_actions: set[str] | None = None
        #: The controls input plugins read, by name: ``{"main": {"gpio", "ble"}}`` (see :meth:`declare_control`).
        self.controls: dict[str, set[str]] = {}

    def __repr__(self) -> str:  # never the password
        return f"Config({str(self.path)!r})"

    @property
    def password(self) -> str:
        return self._password

    @property
    def domain(self) -> str:
        """The account's SIP domain: what a bare extension is completed with."""
        return self.account.domain or registrar_hostport(self.account.registrar)

    def section(self, name: str) -> dict[str, Any]:
        """A plugin's own top-level table (empty when absent); marks it as known."""
        self._claimed.add(name)
        value = self.raw.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(str(self.path), name, f"expected a table, got {_kind(value)}")
        return value

    def convert(self, data: Any, type_: type[T], key: str) -> T:
        """Check ``data`` (found at ``key`` in this file) against ``type_``; see :func:`convert`."""
        return convert(data, type_, str(self.path), key)

    def declare_control(self, source: str, button: str) -> None:
        """An input plugin reads the control ``button`` (call it from ``softphone_configure``).

        Plugins that map controls check the names their configuration uses against :attr:`controls`; they
        do so in a ``trylast`` ``softphone_configure``, after every input plugin declared its controls.
        The same name may come from several sources: they then share one mapping.
        """
        self.controls.setdefault(button, set()).add(source)

    def check_unclaimed(self) -> None:
        """Report a top-level table that neither the core nor any loaded plugin reads."""
        for name in self.raw:
            if name not in self._claimed:
                known = ", ".join(sorted(self._claimed))
                raise ConfigError(str(self.path), name, f"unknown section (known here: {known})")


def registrar_hostport(registrar: str) -> str:
    value = re.sub(r"^sips?:", "", registrar)
    return value.split(";", 1)[0]


def complete_uri(target: str, domain: str) -> str:
    """A SIP URI from what a person wrote: a URI as it is, ``895`` or ``895@host`` completed."""
    target = target.strip()
    if target.startswith(("sip:", "sips:", "tel:")):
        return target
    if "@" in target:
        return f"sip:{target}"
    return f"sip:{target}@{domain}"


def load(path: str | os.PathLike[str], *, secrets: bool = True) -> Config:
    """Load and check the configuration file (and, with ``secrets``, the password)."""
    path = Path(path)
    file = str(path)
    raw = _read_toml(path)
    core_raw = {k: v for k, v in raw.items() if k in _CORE_SECTIONS}
    if "account" not in core_raw:
        raise ConfigError(file, "account", "required table is missing ([account] with registrar and user)")
    core = convert(core_raw, Core, file, "")
    _check_security(file, core.security)
    found = load_secrets(path, core.account) if secrets else {}
    config = Config(path, raw, core, found.get("password", ""))
    config.secrets = {k: v for k, v in found.items() if k != "password"}
    config.secrets_loaded = secrets
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    """The TOML file at ``path``, or a ConfigError naming it that says why it cannot be had."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except PermissionError:
        raise ConfigError(str(path), "", "cannot be read (permission denied)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), "", f"not valid TOML: {e}") from None


_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")


def _check_security(file: str, security: Security) -> None:
    import ipaddress

    for key in ("trusted_sources", "transfer_domains"):
        for i, entry in enumerate(getattr(security, key)):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                if not _HOST.match(entry.rsplit(":", 1)[0] if key == "transfer_domains" else entry):
                    raise ConfigError(
                        file, f"security.{key}[{i}]", f"expected an address, a network (CIDR) or a host name, got {entry!r}"
                    ) from None
    if security.tls_ca_file and not Path(security.tls_ca_file).is_file():
        raise ConfigError(file, "security.tls_ca_file", f"no such file: {security.tls_ca_file}")


#: What the secrets file may hold besides the SIP password: secrets of plugins (the MQTT broker's password).
PLUGIN_SECRETS = frozenset({"mqtt_password"})


def load_password(config_path: Path, account: Account) -> str:
    """The SIP password, from a systemd credential or the secrets file (which others must not read)."""
    return load_secrets(config_path, account)["password"]


def load_secrets(config_path: Path, account: Account) -> dict[str, str]:
    """The secrets (``password``, and those of :data:`PLUGIN_SECRETS`), from a systemd credential or the
    secrets file (which others must not read)."""
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir and (Path(cred_dir) / CREDENTIAL_NAME).is_file():
        secrets_path = Path(cred_dir) / CREDENTIAL_NAME
    else:
        secrets_path = config_path.parent / account.secrets_file
        try:
            mode = secrets_path.stat().st_mode
        except FileNotFoundError:
            raise ConfigError(
                str(secrets_path), "", 'secrets file not found (it holds password = "..." for the account)'
            ) from None
        if mode & (stat.S_IROTH | stat.S_IWOTH):
            raise ConfigError(
                str(secrets_path), "", f"readable by others (mode {stat.S_IMODE(mode):04o}); chmod 0640 or 0600 it"
            )
    file = str(secrets_path)
    data = _read_toml(secrets_path)
    password = data.get("password")
    if not isinstance(password, str) or not password:
        raise ConfigError(file, "password", "expected a non-empty string")
    unknown = set(data) - {"password"} - PLUGIN_SECRETS
    if unknown:
        known = ", ".join(sorted({"password", *PLUGIN_SECRETS}))
        raise ConfigError(file, sorted(unknown)[0], f"unknown key (known here: {known})")
    for key in PLUGIN_SECRETS & set(data):
        if not isinstance(data[key], str) or not data[key]:
            raise ConfigError(file, key, "expected a non-empty string")
    return {k: str(v) for k, v in data.items()}


# --- turning msgspec's reports into FILE: KEY: expectation -----------------------------------------------

_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def convert(data: Any, type_: type[T], file: str, key: str) -> T:
    """Check ``data`` against ``type_`` (a msgspec Struct); a mistake raises one ConfigError line."""
    try:
        return msgspec.convert(data, type_, str_keys=True)
    except msgspec.ValidationError as e:
        m = _AT.match(str(e))
        assert m is not None
        msg, path = m["msg"], _dotted(m["path"] or "")
        if "[...]" in path:
            # msgspec does not name the key of a bad table entry: check the entries one by one.
            head = path.partition("[...]")[0]
            container, value_type = _value_at(data, head), _type_at(type_, head)
            if isinstance(container, dict) and typing.get_origin(value_type) is dict:
                for name, value in container.items():
                    convert(value, typing.get_args(value_type)[1], file, _join(_join(key, head), str(name)))
        full = ".".join(p for p in (key, path) if p)
        raise _explain(msg, full, path, type_, file) from None


def _value_at(data: Any, path: str) -> Any:
    for part in [p for p in path.split(".") if p]:
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _dotted(path: str) -> str:
    return re.sub(r"^\.", "", path)


def _explain(msg: str, full: str, path: str, root: type, file: str) -> ConfigError:
    if m := re.match(r"Object missing required field `(\w+)`", msg):
        return ConfigError(file, _join(full, m[1]), "is required")
    if m := re.match(r"Object contains unknown field `([^`]+)`", msg):
        fields = _fields_at(root, path)
        hint = f" (expected one of: {', '.join(fields)})" if fields else ""
        return ConfigError(file, _join(full, m[1]), f"unknown key{hint}")
    if msg.startswith("Invalid enum value"):
        options = _literal_at(root, path)
        got = msg.split("value", 1)[1].strip()
        if options:
            return ConfigError(file, full, f"expected one of {', '.join(map(repr, options))}, got {got}")
    if m := re.match(r"Expected `(\w+)`, got `(\w+)`", msg):
        return ConfigError(file, full, f"expected {_NAMES.get(m[1], m[1])}, got {_NAMES.get(m[2], m[2])}")
    msg = re.sub(r"`(\w+)`", lambda m: _NAMES.get(m[1], m[1]), msg)
    return ConfigError(file, full, msg[0].lower() + msg[1:])


_NAMES = {
    "int": "an integer",
    "str": "a string",
    "bool": "true or false",
    "float": "a number",
    "array": "a list",
    "object": "a table",
    "null": "nothing",
}


def _join(a: str, b: str) -> str:
    return f"{a}.{b}" if a else b


def _type_at(root: Any, path: str) -> Any:
    t = root
    for part in [p for p in re.split(r"\.|\[\d+\]", path) if p]:
        t = _unwrap(t)
        if isinstance(t, type) and issubclass(t, msgspec.Struct):
            t = typing.get_type_hints(t, include_extras=True).get(part)
        elif typing.get_origin(t) is dict:
            t = typing.get_args(t)[1]
        else:
            return None
    return _unwrap(t)


def _unwrap(t: Any) -> Any:
    while True:
        origin = typing.get_origin(t)
        if origin is Annotated:
            t = typing.get_args(t)[0]
        elif origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            args = [a for a in typing.get_args(t) if a is not type(None)]
            if len(args) != 1:
                return t
            t = args[0]
        elif origin is list:
            t = typing.get_args(t)[0]
        else:
            return t


def _fields_at(root: Any, path: str) -> tuple[str, ...]:
    t = _type_at(root, path)
    if isinstance(t, type) and issubclass(t, msgspec.Struct):
        return t.__struct_fields__
    return ()


def _literal_at(root: Any, path: str) -> tuple[Any, ...]:
    t = _type_at(root, path)
    return typing.get_args(t) if typing.get_origin(t) is Literal else ()


def _kind(value: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list"}.get(
        type(value), type(value).__name__
    )
