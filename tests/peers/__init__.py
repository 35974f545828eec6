"""Real SIP peers on 127.0.0.1 for tests: Kamailio (registrar/proxy with a logged ladder), baresip, Linphone
and sipp."""

from .baresip import Baresip
from .kamailio import Kamailio
from .ladder import SipMessage, format_ladder
from .linphone import Linphone
from .sipp import SippTarget, register
from .support import PeerError, PeerTimeout

__all__ = [
    "Baresip",
    "Kamailio",
    "Linphone",
    "PeerError",
    "PeerTimeout",
    "SipMessage",
    "SippTarget",
    "format_ladder",
    "register",
]
