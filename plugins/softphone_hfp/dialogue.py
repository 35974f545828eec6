"""The call dialogue an HFP/HSP audio gateway owes one connected headset, as a pure state machine.

Pure: no D-Bus, no sockets, no clock of its own. bluez-alsa runs the service-level connection and lends
the RFCOMM channel; this class reads what bluealsa forwards on it (one AT command per message, ending in
``\\r``), writes framed result codes through ``send`` (``b"\\r\\nOK\\r\\n"``) and reports the headset's
commands as button names through ``on_button``. The phone's side of the call comes in through
:meth:`AgDialogue.incoming`, :meth:`~AgDialogue.answered`, :meth:`~AgDialogue.ended` and friends, called
by the plugin from the phone's hooks. The RING repeat goes through an injected scheduler with the
signature of ``loop.call_later`` (as in :mod:`firmware_app.gestures`), so tests drive it with a fake clock.

Sources: HFP 1.7 section 4 (the AG's indicators and result codes), HSP 1.2, 3GPP TS 27.007 (+CLIP, +CLCC),
and bluez-alsa 4.0.0 ``src/ba-rfcomm.c`` for what bluealsa answers itself (``HEADSETS_NOTES.md``).
"""

from __future__ import annotations

import enum
import logging
from typing import Callable

from firmware_app.gestures import Cancellable, Scheduler

log = logging.getLogger(__name__)

#: Longer lines are refused without being parsed (no AT command a headset sends comes close).
MAX_LINE = 256
#: How many distinct bad commands are logged per headset; the rest are answered ERROR silently.
MAX_LOGGED = 32


class Transport(enum.StrEnum):
    """The ``Transport`` property of bluealsa's ``org.bluealsa.RFCOMM1`` object."""

    HFP = "HFP-AG"
    HSP = "HSP-AG"


class HeadsetButton(enum.StrEnum):
    """The headset's call commands, as the button names the phone's input mapping sees (source ``hfp``)."""

    ANSWER = "answer"  # ATA
    HANGUP = "hangup"  # AT+CHUP
    REDIAL = "redial"  # AT+BLDN
    VOICE_DIAL = "voice_dial"  # AT+BVRA=1
    HSP_BUTTON = "hsp_button"  # AT+CKPD=200, HSP's one button: the mapping makes it a toggle


class VolumeKind(enum.StrEnum):
    SPEAKER = "speaker"  # AT+VGS
    MICROPHONE = "microphone"  # AT+VGM


class CallPhase(enum.StrEnum):
    """Where the one call the headset knows of stands."""

    IDLE = "idle"
    RINGING = "ringing"  # incoming, callsetup 1
    DIALING = "dialing"  # outgoing, callsetup 2
    ALERTING = "alerting"  # outgoing, the far end rings, callsetup 3
    ACTIVE = "active"  # call 1


# HFP indicator indices in bluealsa's +CIND=? order: service, call, callsetup, callheld, signal, roam, battchg.
IND_SERVICE, IND_CALL, IND_CALLSETUP = 1, 2, 3
_CALLSETUP = {CallPhase.RINGING: 1, CallPhase.DIALING: 2, CallPhase.ALERTING: 3}
_CLCC_STAT = {CallPhase.ACTIVE: 0, CallPhase.DIALING: 2, CallPhase.ALERTING: 3, CallPhase.RINGING: 4}

#: Commands bluealsa answers itself and copies to the fd's holder: never answered here (bluealsa did).
BLUEALSA_ANSWERS = frozenset(
    {"+BRSF", "+BAC", "+BCS", "+CIND", "+CMER", "+BIA", "+VGS", "+VGM", "+XAPL", "+IPHONEACCEV", "+ANDROID",
     "+NREC", "+BCC"}
)  # fmt: skip
#: HSP 1.2 defines only these (and the volume copies): anything else from an HSP headset is an error.
_HSP_COMMANDS = frozenset({"+CKPD"})

#: ``on_button(button)``: False when the phone cannot do it now (the headset then gets ERROR).
ButtonHandler = Callable[[HeadsetButton], bool | None]


def frame(line: str) -> bytes:
    """One result code as the headset expects it on the wire."""
    return b"\r\n" + line.encode("ascii") + b"\r\n"


OK, ERROR, RING = frame("OK"), frame("ERROR"), frame("RING")


def _number_field(number: str) -> str:
    """``"<number>",<type>`` of +CLIP and +CLCC (27.007: 145 international, 129 otherwise)."""
    return f'"{number}",{145 if number.startswith("+") else 129}'


def _clean_number(number: str | None) -> str | None:
    """What of a caller's number may go between quotes on the wire: printable ASCII, no quote, bounded."""
    if not number:
        return None
    kept = "".join(c for c in number if c.isascii() and c.isprintable() and c != '"')[:32]
    return kept or None


class AgDialogue:
    """The audio gateway's half of the call dialogue with one headset, over the RFCOMM fd bluealsa lends.

    ``send(frame)`` writes raw bytes to the fd; ``on_button`` hears the headset's call commands;
    ``on_volume(kind, level)`` hears the volume the headset reports (copies of AT+VGS/AT+VGM, which
    bluealsa has already answered); ``on_dial(number)`` hears ATD<number>; (without it ATD gets ERROR).
    A command reported to ``on_button`` is answered OK after the handler returns (ERROR when it returns
    False); frames the handler causes meanwhile (``answered()`` from a synchronous hook) follow the OK,
    as HFP wants the OK first.

    One call at a time: the phone tells this class about the call the headset is for.
    """

    def __init__(
        self,
        transport: Transport | str,
        send: Callable[[bytes], None],
        on_button: ButtonHandler,
        *,
        schedule: Scheduler,
        on_volume: Callable[[VolumeKind, int], None] | None = None,
        on_dial: Callable[[str], bool | None] | None = None,
        ring_interval: float = 1.0,
        logger: logging.Logger = log,
    ) -> None:
        self.transport = Transport(transport)
        self._send = send
        self._on_button = on_button
        self._on_volume = on_volume
        self._on_dial = on_dial
        self._schedule = schedule
        self.ring_interval = ring_interval
        self._log = logger
        self.phase = CallPhase.IDLE
        self.number: str | None = None
        self.incoming_call = False  # the direction of the call in ``phase``, for +CLCC
        self.clip = False  # AT+CLIP=1: +CLIP after each RING
        self.indicators = False  # +CIEV may be sent: the SLC is complete and AT+CMER did not turn them off
        self._ring_timer: Cancellable | None = None
        self._held: list[bytes] | None = None  # frames held back while a button handler runs
        self._logged: set[str] = set()
        self._closed = False
        self.features = 0  # the headset's HF features (AT+BRSF), when the phone saw them
        self.volume: dict[VolumeKind, int] = {}  # the gains the headset last reported or was sent, 0..15

    @property
    def hfp(self) -> bool:
        return self.transport is Transport.HFP

    # --- the phone's side

    def slc_ready(self) -> None:
        """The service-level connection is complete: service 1, and the call as it stands (idempotent)."""
        if not self.hfp or self.indicators:
            return
        self.indicators = True
        self._ciev(IND_SERVICE, 1)
        if self.phase is CallPhase.ACTIVE:
            self._ciev(IND_CALL, 1)
        elif self.phase in _CALLSETUP:
            self._ciev(IND_CALLSETUP, _CALLSETUP[self.phase])

    def incoming(self, number: str | None = None) -> None:
        """A call rings: callsetup 1, then RING (with +CLIP when asked for) now and every ``ring_interval``."""
        if self.phase is not CallPhase.IDLE:
            self._log.debug("hfp: a second call rings; call waiting is not supported yet")
            return
        self.phase, self.incoming_call, self.number = CallPhase.RINGING, True, _clean_number(number)
        self._ciev(IND_CALLSETUP, 1)
        self._ring()

    def dialing(self, number: str | None = None) -> None:
        """An outgoing call was placed: callsetup 2."""
        if self.phase is not CallPhase.IDLE:
            return
        self.phase, self.incoming_call, self.number = CallPhase.DIALING, False, _clean_number(number)
        self._ciev(IND_CALLSETUP, 2)

    def alerting(self) -> None:
        """The far end of the outgoing call rings (180): callsetup 3."""
        if self.phase is CallPhase.DIALING:
            self.phase = CallPhase.ALERTING
            self._ciev(IND_CALLSETUP, 3)

    def answered(self) -> None:
        """The call is up, whoever answered it: call 1, then callsetup 0; RING stops.

        From idle (a headset that connected during a call) only call 1: there was no call setup to end.
        """
        if self.phase is CallPhase.ACTIVE:
            return
        setting_up = self.phase is not CallPhase.IDLE
        self._stop_ring()
        self.phase = CallPhase.ACTIVE
        self._ciev(IND_CALL, 1)
        if setting_up:
            self._ciev(IND_CALLSETUP, 0)

    def ended(self) -> None:
        """The call is over (rejected, hung up here or far, answered elsewhere, transferred away)."""
        phase = self.phase
        if phase is CallPhase.IDLE:
            return
        self._stop_ring()
        self.phase, self.number, self.incoming_call = CallPhase.IDLE, None, False
        if phase is CallPhase.ACTIVE:
            self._ciev(IND_CALL, 0)
        else:
            self._ciev(IND_CALLSETUP, 0)

    def set_volume(self, kind: VolumeKind, level: int) -> None:
        """The phone's volume (or microphone gain) changed: +VGS/+VGM, 0..15, unless the headset has it."""
        level = max(0, min(15, level))
        if self.volume.get(kind) == level:
            return
        self.volume[kind] = level
        self._send_frame(frame(f"+{'VGS' if kind is VolumeKind.SPEAKER else 'VGM'}: {level}"))

    def close(self) -> None:
        """The headset went away: stop ringing and send nothing more (idempotent)."""
        self._stop_ring()
        self._closed = True

    # --- the headset's side

    def received(self, message: bytes) -> None:
        """One message bluealsa forwarded from the headset: a command to answer, or a copy to learn from."""
        if self._closed:
            return
        if len(message) > MAX_LINE:
            self._bad(f"an over-long line ({len(message)} bytes)", key="over-long line")
            return
        raw = message.rstrip(b"\r\n")
        if not raw:
            return  # an empty line: V.250 ignores it
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            self._bad(repr(raw))
            return
        if not line.isprintable() or line[:2].upper() != "AT":
            self._bad(repr(line))
            return
        body = line[2:]
        if body[:1].upper() == "D" and self.hfp:
            self._dial(line, body[1:])
            return
        name, _, arg = body.upper().partition("=")
        if name.endswith("?"):
            name, arg = name[:-1], "?"
        if name == "" and arg == "":
            self._send_frame(OK)  # a bare AT: the headset checks that someone listens
        elif name in BLUEALSA_ANSWERS:
            self._copy(name, arg)
        elif not self.hfp and name not in _HSP_COMMANDS:
            self._bad(repr(line))
        else:
            self._command(line, name, arg)

    def _copy(self, name: str, arg: str) -> None:
        if name in ("+VGS", "+VGM") and arg.isdigit() and self._on_volume is not None:
            level = int(arg)
            if 0 <= level <= 15:
                kind = VolumeKind.SPEAKER if name == "+VGS" else VolumeKind.MICROPHONE
                self.volume[kind] = level
                self._on_volume(kind, level)
        elif name == "+BRSF" and arg.isdigit():
            self.features = int(arg)
        elif name == "+CMER" and self.hfp:
            # AT+CMER=3,0,0,1 turns indicator events on; HFP 4.2.1.1: the SLC is complete with it (or with
            # the AT+CHLD=? that follows, which bluealsa only gets when both sides do three-way calling).
            fields = arg.split(",")
            if len(fields) >= 4 and fields[3].strip() == "0":
                self.indicators = False
            elif len(fields) >= 4 and fields[3].strip() == "1":
                self.slc_ready()

    def _command(self, line: str, name: str, arg: str) -> None:
        phase = self.phase
        if name == "A" and arg == "":
            self._button(line, HeadsetButton.ANSWER, phase is CallPhase.RINGING)
        elif name == "+CHUP" and arg == "":
            self._button(line, HeadsetButton.HANGUP, phase is not CallPhase.IDLE)
        elif name == "+BLDN" and arg == "":
            self._button(line, HeadsetButton.REDIAL, True)
        elif name == "+BVRA" and arg in ("0", "1"):
            if arg == "1":
                self._button(line, HeadsetButton.VOICE_DIAL, True)
            else:
                self._send_frame(OK)  # the headset ended voice recognition: nothing runs to stop
        elif name == "+CKPD" and arg == "200":
            self._button(line, HeadsetButton.HSP_BUTTON, True)
        elif name == "+CLIP" and arg in ("0", "1"):
            self.clip = arg == "1"
            self._send_frame(OK)
        elif name in ("+CCWA", "+CMEE") and arg in ("0", "1"):
            self._send_frame(OK)  # accepted; call waiting and +CME ERROR codes are not sent yet
        elif name == "+CLCC" and arg == "":
            self._clcc()
        elif name == "+BTRH" and arg == "?":
            self._send_frame(OK)  # no call is on response-and-hold
        elif name == "+CNUM" and arg == "":
            self._send_frame(OK)  # no subscriber number to tell
        elif name == "+COPS" and arg == "3,0":
            self._send_frame(OK)
        elif name == "+COPS" and arg == "?":
            self._send_frame(frame("+COPS: 0"), OK)
        else:
            self._bad(repr(line))

    def _dial(self, line: str, rest: str) -> None:
        # ATD<number>; places a voice call (27.007); ATD>n; dials from memory, which the phone has not.
        number = rest[:-1] if rest.endswith(";") else ""
        if self._on_dial is None or not number or not all(c.isdigit() or c in "+*#" for c in number):
            self._bad(repr(line))
        elif self.phase is not CallPhase.IDLE:
            self._send_frame(ERROR)
        else:
            on_dial = self._on_dial
            self._verdict(lambda: on_dial(number))

    def _button(self, line: str, button: HeadsetButton, allowed: bool) -> None:
        if not allowed:
            self._send_frame(ERROR)  # a known command at the wrong moment: no log, headsets do this
            return
        self._verdict(lambda: self._on_button(button))

    def _verdict(self, handler: Callable[[], bool | None]) -> None:
        """Run a handler, then answer OK (ERROR when it refused) before any frame it caused."""
        self._held = held = []
        try:
            refused = handler() is False
        except Exception:
            self._log.exception("hfp: a headset command's handler failed")
            refused = True
        finally:
            self._held = None
        self._send_frame(ERROR if refused else OK, *held)

    def _clcc(self) -> None:
        frames = []
        if self.phase is not CallPhase.IDLE:
            # +CLCC: <idx>,<dir>,<stat>,<mode>,<mpty>[,<number>,<type>]; dir 1 = mobile terminated; mode 0 voice
            fields = f"1,{int(self.incoming_call)},{_CLCC_STAT[self.phase]},0,0"
            if self.number:
                fields += "," + _number_field(self.number)
            frames.append(frame("+CLCC: " + fields))
        self._send_frame(*frames, OK)

    # --- output

    def _ring(self) -> None:
        self._ring_timer = None
        if self.phase is not CallPhase.RINGING or self._closed:
            return
        frames = [RING]
        if self.hfp and self.clip and self.number:
            frames.append(frame("+CLIP: " + _number_field(self.number)))
        self._send_frame(*frames)
        self._ring_timer = self._schedule(self.ring_interval, self._ring)

    def _stop_ring(self) -> None:
        if self._ring_timer is not None:
            self._ring_timer.cancel()
            self._ring_timer = None

    def _ciev(self, indicator: int, value: int) -> None:
        if self.hfp and self.indicators:
            self._send_frame(frame(f"+CIEV: {indicator},{value}"))

    def _send_frame(self, *frames: bytes) -> None:
        if self._closed:
            return
        if self._held is not None:
            self._held.extend(frames)
            return
        for f in frames:
            self._send(f)

    def _bad(self, what: str, key: str | None = None) -> None:
        """Unknown, malformed or over-long: ERROR, logged once per distinct command (and at most MAX_LOGGED)."""
        self._send_frame(ERROR)
        key = key or what
        if key in self._logged or len(self._logged) > MAX_LOGGED:
            return
        self._logged.add(key)
        if len(self._logged) > MAX_LOGGED:
            self._log.warning("hfp: the %s headset sends many bad commands; no more are logged", self.transport)
        else:
            self._log.warning("hfp: the %s headset sent %s: answered ERROR", self.transport, what)
