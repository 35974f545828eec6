"""What the user agents among the test peers (baresip, Linphone) share: a user registered from its own port."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from .kamailio import Kamailio
from .support import LOOPBACK, PeerError


class UserAgent:
    """A peer registered as ``user`` at ``kamailio``, sending SIP from 127.0.0.1:``sip_port``."""

    kamailio: Kamailio
    user: str
    sip_port: int
    log_path: Path

    @property
    def uri(self) -> str:
        """The account's address of record, e.g. sip:1001@127.0.0.1:5080."""
        return self.kamailio.uri(self.user)

    @property
    def source(self) -> str:
        """"ip:port" this UA sends SIP from (its column in a Kamailio ladder)."""
        return f"{LOOPBACK}:{self.sip_port}"

    def start(self, timeout: float = 10.0) -> Self:
        # A port free when probed can be taken by another process before the peer binds it: pick new ports
        # (each _start_once does) and try again when that happens.
        for attempt in range(3):
            try:
                return self._start_once(timeout)
            except PeerError:
                if attempt == 2 or "Address already in use" not in self.log_path.read_text(errors="replace"):
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> Self:
        raise NotImplementedError
