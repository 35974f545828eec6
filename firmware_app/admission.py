"""Who may ring the phone: INVITEs from trusted sources, for the account's own user or its aliases.

The engine's INVITE screen (image/pjsua2/firmware_screen.c) applies the same rule before PJSUA spends a call
slot or media on a call; the phone applies it again for PJSUA2 builds without the screen, and for the
message-waiting NOTIFYs it acts on.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from firmware_app.config import Config, registrar_hostport
from firmware_app.events import Network

log = logging.getLogger("firmware_app.admission")


def resolve_trusted(config: Config) -> list[Network]:
    """The networks INVITEs may come from: ``security.trusted_sources``, or the registrars' addresses.

    Host names are resolved here (blocking DNS: run it off the phone's loop); one that does not resolve is
    left out with a warning, so no call comes from it until the phone starts again.
    """
    account = config.account
    entries = config.security.trusted_sources or [
        registrar_hostport(r) for r in (account.registrar, account.secondary_registrar) if r
    ]
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        host = entry.rsplit(":", 1)[0] if entry.count(":") == 1 else entry
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_UDP)
        except OSError as e:
            log.warning("trusted source %s does not resolve (%s): no calls from it for now", entry, e)
            continue
        networks.extend(ipaddress.ip_network(info[4][0]) for info in infos)
    return networks


class Admission:
    """The phone's rule for who may ring it and whose NOTIFYs it believes."""

    def __init__(self, config: Config, trusted: list[Network]) -> None:
        self.config = config
        self.trusted = trusted

    def trusted_source(self, source: str) -> bool:
        """Whether ``"ip:port"`` lies in a trusted network."""
        try:
            address = ipaddress.ip_address(source.rsplit(":", 1)[0].strip("[]"))
        except ValueError:
            return False
        return any(address in net for net in self.trusted)

    def screen(self, source: str, to_user: str) -> tuple[int, str] | None:
        """Why an INVITE from ``source`` for ``to_user`` must not ring the phone, as ``(status, reason)``, or
        None when it may."""
        if not self.trusted_source(source):
            return 403, f"{source.rsplit(':', 1)[0]} is not a trusted source (security.trusted_sources)"
        account = self.config.account
        if to_user not in (account.user, *account.aliases):
            named = f"user {to_user!r}" if to_user else "no user"
            return 404, f"its request URI names {named}, not this phone's {account.user!r} (account.aliases)"
        return None
