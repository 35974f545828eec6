"""A colleague's line as the dialog event package (RFC 4235) reports it: idle, ringing or busy.

The registrar (Kamailio's presence_dialoginfo) sends NOTIFYs whose ``application/dialog-info+xml`` body
lists the watched user's dialogs. The phone needs one word per colleague, for a "first available agent"
transfer and for busy-lamp LEDs: any confirmed dialog is busy; a dialog ringing towards them (recipient,
trying/proceeding/early) is ringing; one they are dialling is busy; none but terminated ones is idle. Bodies
come from the network: bounded, parsed without external entities, and anything odd is None (not known).
"""

from __future__ import annotations

import enum
import xml.etree.ElementTree as ET

NS = "{urn:ietf:params:xml:ns:dialog-info}"
MAX_BODY = 64 * 1024


class LineState(enum.StrEnum):
    IDLE = "idle"
    RINGING = "ringing"
    BUSY = "busy"
    UNKNOWN = "unknown"  # no NOTIFY yet, or the subscription ended: never taken as idle


_SETTING_UP = ("trying", "proceeding", "early")


def line_state(body: str) -> LineState | None:
    """The state a dialog-info body says; an empty body (Kamailio's first NOTIFY) is idle. None when the
    body is not dialog-info (malformed, too long, another document)."""
    return read(body)[0]


def read(body: str) -> tuple[LineState | None, int | None]:
    """The state and the document's ``version`` (RFC 4235 4.1: it grows with each NOTIFY of a subscription,
    so an older one that arrives late can be told apart; None when there is none)."""
    body = body.strip()
    if not body:
        return LineState.IDLE, None
    if len(body) > MAX_BODY or "<!ENTITY" in body.upper():
        return None, None
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None, None
    if root.tag != f"{NS}dialog-info":
        return None, None
    version_text = root.get("version", "")
    version = int(version_text) if version_text.isdigit() else None
    return _state(root), version


def _state(root: ET.Element) -> LineState:
    live = []
    for dialog in root.findall(f"{NS}dialog"):
        state = (dialog.findtext(f"{NS}state") or "").strip().lower()  # Kamailio writes "Trying"
        if state and state != "terminated":
            live.append((dialog.get("direction", ""), state))
    if not live:
        return LineState.IDLE
    if any(state == "confirmed" for _, state in live):
        return LineState.BUSY
    if any(direction == "recipient" and state in _SETTING_UP for direction, state in live):
        return LineState.RINGING
    return LineState.BUSY  # dialling out
