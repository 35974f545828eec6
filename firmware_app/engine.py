"""The SIP engine: the one owner of every PJSUA2 object in the phone.

Threads (PJSUA2 aborts the process when a thread it does not know touches it, see PJSUA2_NOTES.md):

* The engine thread creates the library and then blocks in ``libHandleEvents`` (no PJSIP worker or media
  threads, so nothing polls while the phone waits: the idle cost is one wake-up per poll interval).
* The phone's thread (the asyncio loop that runs the plugins) registers itself with ``libRegisterThread``
  and calls the engine's command methods directly: PJSUA serialises them with its own locks, and a command
  reaches the wire at once instead of waiting for the engine thread's next wake-up.

Callbacks arrive on either thread. They copy what they need into plain values and hand them to ``post``
(thread-safe), nothing more. Only the engine holds ``pjsua2`` objects. A ``Call`` whose call ended is let go
on the engine thread a little later (:data:`RELEASE_AFTER_S`), or at shutdown, never by the garbage
collector somewhere else: PJSUA releases its locks before it calls back, so a callback for the same call
may be on its way on the other thread, and PJSUA even delivers late transaction events of an ended call to
whichever call has its slot by then; an instance deleted under such a callback crashes the process. That
the deletion cannot hang up the slot's next call is patch 0005 of this project's PJSUA2 build.

INVITEs from untrusted sources or for other users are answered by the INVITE screen, a PJSIP module this
project compiles into its PJSUA2 build (``image/pjsua2/firmware_screen.c``), before PJSUA spends a call slot
or media on them; see :class:`_InviteScreen`.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import gc
import logging
import re
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Callable

import pjsua2 as pj

from firmware_app import alsa
from firmware_app.config import Config, registrar_hostport
from firmware_app.dialoginfo import LineState
from firmware_app.dialoginfo import read as read_dialog_info
from firmware_app.quality import quality
from firmware_app.errors import CommandError, EngineError
from firmware_app.events import (  # noqa: F401 (re-exported: the engine's reports)
    POLL_MS,
    CallEvent,
    DtmfEvent,
    EngineEvent,
    LineEvent,
    QualityEvent,
    IncomingEvent,
    MediaEvent,
    MwiEvent,
    Network,
    RegEvent,
    ReinviteEvent,
    TransferEvent,
    TransferRequestEvent,
)
from firmware_app.model import Call, CallState, Direction, Registration, RegistrationState

log = logging.getLogger("firmware_app.engine")

SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

#: A call PJSUA never gave a slot (e.g. a transfer's new call whose REFER failed) is let go after this long.
UNBORN_CALL_S = 5.0

#: An ended call's ``Call`` instance is deleted this long after its end, once no callback can be using it.
RELEASE_AFTER_S = 2.0

#: How often the INVITE screen's refusals are summed up in the log, at most (a flood is one line a minute).
SCREEN_REPORT_S = 60.0





@dataclass(frozen=True, slots=True)
class SoundProbe:
    """What the loaded PJSUA2 build offers for sound (``firmware-app doctor``)."""

    version: str
    backends: tuple[str, ...]  # driver names of its sound devices, e.g. ("ALSA",); empty: built without sound
    devices: tuple[tuple[str, int, int], ...]  # (name, inputs, outputs) as PJSUA2 lists them


def probe_sound() -> SoundProbe:
    """Start PJSUA2 just long enough to list its sound devices, without transports or a sound device open.

    For a process without a :class:`SipEngine` (one Endpoint per process); a running phone is not disturbed.
    """
    ep = pj.Endpoint()
    ep.libCreate()
    try:
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.medConfig.hasIoqueue = False
        cfg.medConfig.threadCnt = 0
        cfg.logConfig.level = cfg.logConfig.consoleLevel = 0
        ep.libInit(cfg)
        adm = ep.audDevManager()
        infos = [adm.getDevInfo(i) for i in range(adm.getDevCount())]
        return SoundProbe(
            ep.libVersion().full,
            tuple(sorted({d.driver for d in infos})),
            tuple((d.name, d.inputCount, d.outputCount) for d in infos),
        )
    finally:
        ep.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)
        del ep


_SIP_STATES = {
    pj.PJSIP_INV_STATE_NULL: CallState.DIALING,
    pj.PJSIP_INV_STATE_CALLING: CallState.DIALING,
    pj.PJSIP_INV_STATE_INCOMING: CallState.RINGING,
    pj.PJSIP_INV_STATE_EARLY: CallState.RINGING,  # DIALING for outgoing calls, see _snapshot
    pj.PJSIP_INV_STATE_CONNECTING: CallState.CONNECTING,
    pj.PJSIP_INV_STATE_CONFIRMED: CallState.ACTIVE,
    pj.PJSIP_INV_STATE_DISCONNECTED: CallState.ENDED,
}

_NAME_URI = re.compile(r'^\s*(?:"(?P<q>[^"]*)"|(?P<t>[^<]*?))\s*<(?P<uri>[^>]*)>')


def split_name_uri(value: str) -> tuple[str, str]:
    """``'"Alice" <sip:a@b>'`` -> ``("Alice", "sip:a@b")``."""
    m = _NAME_URI.match(value)
    if not m:
        return "", value.strip()
    return (m["q"] or m["t"] or "").strip(), m["uri"]


class _PhoneCall(pj.Call):
    """A PJSUA2 call that reports what happens to it as plain values."""

    def __init__(self, engine: SipEngine, call_id: int, direction: Direction, pj_call_id: int | None = None):
        if pj_call_id is None:
            super().__init__(engine._account)
        else:
            super().__init__(engine._account, pj_call_id)
        self.engine = engine
        self.id = call_id
        self.direction = direction
        self.media_ready = False
        self.mic_muted = False  # applied again whenever the call's audio is (re)connected
        self.created = time.monotonic()
        self.sip_call_id = ""  # the SIP Call-ID PJSUA's slot held when we last looked (see reconcile)
        self.last: Call | None = None  # the latest snapshot

    def snapshot(self) -> Call:
        ci = self.getInfo()
        state = _SIP_STATES.get(ci.state, CallState.DIALING)
        if state is CallState.RINGING and self.direction is Direction.OUTGOING:
            state = CallState.DIALING
        name, uri = split_name_uri(ci.remoteUri)
        self.sip_call_id = self.sip_call_id or ci.callIdString
        self.last = Call(
            id=self.id,
            direction=self.direction,
            state=state,
            remote_uri=uri,
            remote_name=name,
            sip_call_id=ci.callIdString,
            status_code=ci.lastStatusCode,
            reason=ci.lastReason,
        )
        return self.last

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        try:
            call = self.snapshot()
            if call.state is CallState.ENDED:
                self.engine._call_ended(self)
            self.engine.post(CallEvent(call))
        except Exception:
            log.exception("call %s: state callback failed", self.id)

    def onCallTsxState(self, prm: pj.OnCallTsxStateParam) -> None:
        try:
            e = prm.e
            if e.type != pj.PJSIP_EVENT_TSX_STATE:
                return
            tsx = e.body.tsxState.tsx
            if (
                tsx.role == pj.PJSIP_ROLE_UAC
                and tsx.method == "INVITE"
                and tsx.state == pj.PJSIP_TSX_STATE_COMPLETED
                and tsx.statusCode >= 300
                and self.getInfo().state == pj.PJSIP_INV_STATE_CONFIRMED  # a re-INVITE, not the call's INVITE
            ):
                self.engine.post(ReinviteEvent(self.id, tsx.statusCode, self.direction is Direction.OUTGOING))
        except Exception:
            log.exception("call %s: transaction callback failed", self.id)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        try:
            ci = self.getInfo()
            local_hold = active = False
            for i, mi in enumerate(ci.media):
                if mi.type != pj.PJMEDIA_TYPE_AUDIO:
                    continue
                local_hold = mi.status == pj.PJSUA_CALL_MEDIA_LOCAL_HOLD
                if mi.status in (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                    active = True
                    self.engine._connect_audio(self, self.getAudioMedia(i))
            self.engine.post(MediaEvent(self.id, local_hold=local_hold, active=active))
        except Exception:
            log.exception("call %s: media callback failed", self.id)

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        try:
            prm.cont = True  # keep the subscription until the final NOTIFY
            self.engine.post(TransferEvent(self.id, prm.statusCode, prm.reason, prm.finalNotify))
        except Exception:
            log.exception("call %s: transfer status callback failed", self.id)

    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:
        try:
            _, uri = split_name_uri(prm.dstUri)
            accepted = self.engine.may_transfer_to(uri)
            if accepted:
                prm.newCall = self.engine._new_call(Direction.OUTGOING)
            else:
                prm.statusCode = 403
            self.engine.post(TransferRequestEvent(self.id, uri, accepted))
        except Exception:
            prm.statusCode = 500
            log.exception("call %s: transfer request callback failed", self.id)

    def onStreamDestroyed(self, prm: pj.OnStreamDestroyedParam) -> None:
        """The audio stream is about to go (call end, or a re-INVITE that replaces it): its RTCP figures."""
        try:
            stat = self.getStreamStat(prm.streamIdx)
            rtcp = stat.rtcp
            rx, tx = rtcp.rxStat, rtcp.txStat
            if rx.pkt == 0 and tx.pkt == 0:
                return  # no audio flowed: nothing to say
            self.engine.post(QualityEvent(quality(
                self.id, rx_packets=rx.pkt, rx_lost=rx.loss, tx_packets=tx.pkt, tx_lost=tx.loss,
                jitter_ms=rx.jitterUsec.mean / 1000, jitter_max_ms=rx.jitterUsec.max / 1000,
                rtt_ms=rtcp.rttUsec.mean / 1000 if rtcp.rttUsec.n else 0.0,
            )))
        except Exception:
            log.debug("call %s: no stream statistics", self.id, exc_info=True)

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        try:
            method = "info" if prm.method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc4733"
            self.engine.post(DtmfEvent(self.id, str(prm.digit)[:1], method))
        except Exception:
            log.exception("call %s: DTMF callback failed", self.id)

    def onCallReplaced(self, prm: pj.OnCallReplacedParam) -> None:
        try:
            prm.newCall = self.engine._new_call(Direction.INCOMING, prm.newCallId)
        except Exception:
            log.exception("call %s: replace callback failed", self.id)


class _LineWatch(pj.Buddy):
    """A colleague's line, watched with the dialog event package (RFC 4235) through the registrar.

    PJSUA2 2.17 has no getter for the parsed dialog-info (and PJSIP keeps only the first dialog): each NOTIFY's
    body is read from the transaction event and parsed in :mod:`firmware_app.dialoginfo`. Callbacks come on the
    engine thread. A subscription that ends is reported; the phone subscribes again (PJSUA itself would wait
    five minutes for most endings)."""

    def __init__(self, engine: SipEngine, uri: str) -> None:
        super().__init__()
        self.engine = engine
        self.uri = uri
        self.said_bad_body = False  # a registrar that sends such bodies sends many: said once
        self.version: int | None = None  # the last dialog-info version taken in this subscription

    def onBuddyEvSubDlgEventState(self, prm: pj.OnBuddyEvSubStateParam) -> None:
        try:
            e = prm.e
            if e.type == pj.PJSIP_EVENT_TSX_STATE and e.body.tsxState.type == pj.PJSIP_EVENT_RX_MSG:
                whole = e.body.tsxState.src.rdata.wholeMsg
                if whole.startswith("NOTIFY"):
                    state, version = read_dialog_info(whole.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in whole else "")
                    if version is not None and self.version is not None and version <= self.version:
                        # Kamailio's workers send a line's NOTIFYs in parallel: an older one may come last.
                        log.debug("line %s: NOTIFY version %s after %s: older, ignored", self.uri, version, self.version)
                    elif state is None:
                        if not self.said_bad_body:
                            log.warning("line %s: a NOTIFY whose body is not dialog-info: ignored", self.uri)
                            self.said_bad_body = True
                    else:
                        if version is not None:
                            self.version = version
                        self.engine.post(LineEvent(self.uri, state.value))
            info = self.getInfo()
            if info.subState == pj.PJSIP_EVSUB_STATE_TERMINATED:
                self.version = None  # a new subscription counts its versions afresh
                reason = f"{info.subTermCode} {info.subTermReason}".strip()
                self.engine.post(LineEvent(self.uri, LineState.UNKNOWN.value, ended=True, reason=reason))
        except Exception:
            log.exception("line %s: dialog event callback failed", self.uri)


class _PhoneAccount(pj.Account):
    def __init__(self, engine: SipEngine) -> None:
        super().__init__()
        self.engine = engine

    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        try:
            info = self.getInfo()
            if prm.code // 100 == 2 and prm.expiration > 0:
                state = RegistrationState.REGISTERED
            elif prm.code // 100 == 2:
                state = RegistrationState.UNREGISTERED
            else:
                state = RegistrationState.FAILED
            reason = prm.reason or (info.regStatusText if prm.code == 0 else "")
            self.engine.post(RegEvent(Registration(state, prm.code, reason, prm.expiration, info.uri)))
        except Exception:
            log.exception("registration callback failed")

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        # Keep a reference at once (a Call dropped here is declined with 603), and answer nothing from
        # inside this callback: a final response to an INVITE without SDP sent from here aborts PJSUA.
        try:
            call = self.engine._new_call(Direction.INCOMING, prm.callId)
            whole = prm.rdata.wholeMsg
            snapshot = dataclasses.replace(
                call.snapshot(), alert_info=header(whole, "Alert-Info"), call_info=header(whole, "Call-Info")
            )
            self.engine.post(IncomingEvent(snapshot, prm.rdata.srcAddress, request_uri_user(whole)))
        except Exception:
            log.exception("incoming call callback failed")

    def onMwiInfo(self, prm: pj.OnMwiInfoParam) -> None:
        try:
            body = prm.rdata.wholeMsg.split("\r\n\r\n", 1)[-1]
            self.engine.post(MwiEvent(prm.rdata.srcAddress, body))
        except Exception:
            log.exception("message waiting callback failed")

    def onIncomingSubscribe(self, prm: pj.OnIncomingSubscribeParam) -> None:
        prm.code = 403  # presence is not offered


_RURI = re.compile(r"^\S+\s+(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):(?P<rest>\S*)\s+SIP/", re.ASCII)


def header(whole_msg: str, name: str) -> str:
    """Every value of header ``name`` in a SIP message's head, comma-joined ("" when it has none; names
    are case-insensitive, RFC 3261 7.3.1). Bounded: a header's value is cut at 512 characters."""
    head = whole_msg.split("\r\n\r\n", 1)[0]
    wanted = name.lower()
    values = [
        value.strip()[:512]
        for line in head.split("\r\n")[1:]
        for key, sep, value in [line.partition(":")]
        if sep and key.strip().lower() == wanted
    ]
    return ", ".join(values)


def request_uri_user(whole_msg: str) -> str:
    """Who an INVITE's request URI names: the user part of a sip:/sips: URI (``""`` when it has none), or the
    number of a tel: URI. Schemes are case-insensitive (RFC 3261 19.1.4), user parts are not."""
    m = _RURI.match(whole_msg.split("\r\n", 1)[0])
    if not m:
        return ""
    scheme, rest = m["scheme"].lower(), m["rest"]
    if scheme in ("sip", "sips"):
        user, at, _ = rest.partition("@")
        return user.split(":", 1)[0] if at else ""  # "user:password@host" is deprecated but legal
    if scheme == "tel":
        return rest.split(";", 1)[0]
    return ""


class _InviteScreen:
    """The INVITE screen compiled into this project's PJSUA2 build (image/pjsua2/firmware_screen.c).

    It answers INVITEs from untrusted sources (403) and for other users (404) before PJSUA takes a call slot
    or opens RTP sockets for them, so a flood costs neither. PJSUA2 builds without it (the PyPI wheel) still
    refuse such calls, later, in :class:`Phone`.
    """

    def __init__(self) -> None:
        self._lib: ctypes.CDLL | None = None
        try:
            lib = ctypes.CDLL(pj._pjsua2.__file__)  # already loaded: the same handle, no second copy
            lib.firmware_screen_enable  # noqa: B018 (raises AttributeError when the build lacks it)
        except (AttributeError, OSError):
            return
        lib.firmware_screen_add_net.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        lib.firmware_screen_add_user.argtypes = [ctypes.c_char_p]
        lib.firmware_screen_enable.argtypes = [ctypes.c_int]
        lib.firmware_screen_refused.argtypes = [ctypes.c_int]
        lib.firmware_screen_refused.restype = ctypes.c_ulong
        lib.firmware_screen_last_source.restype = ctypes.c_char_p
        self._lib = lib
        self._reported = (0, 0)
        self._reported_at = 0.0

    @property
    def available(self) -> bool:
        return self._lib is not None

    def start(self, networks: Iterable[Network], users: Iterable[str]) -> None:
        """Screen from now on (after libInit, before libStart: no INVITE gets past it)."""
        lib = self._lib
        if lib is None:
            return
        lib.firmware_screen_reset()
        for net in networks:
            status = lib.firmware_screen_add_net(net.version, net.network_address.packed, net.prefixlen)
            if status:
                log.warning("the INVITE screen cannot hold trusted source %s (PJSIP status %s)", net, status)
        for user in users:
            if lib.firmware_screen_add_user(user.encode()):
                log.warning("the INVITE screen cannot hold user %r", user)
        status = lib.firmware_screen_enable(1)
        if status:
            raise EngineError(f"the INVITE screen could not start (PJSIP status {status})")

    def report(self) -> None:
        """Log what the screen refused since the last report, at most once a minute (engine thread)."""
        lib = self._lib
        now = time.monotonic()
        if lib is None or now - self._reported_at < SCREEN_REPORT_S:
            return
        counts = self.refused()
        source, user = counts[0] - self._reported[0], counts[1] - self._reported[1]
        if source or user:
            last = (lib.firmware_screen_last_source() or b"").decode(errors="replace")
            log.warning(
                "refused %d INVITEs from untrusted sources (last from %s) and %d for other users",
                source,
                last or "-",
                user,
            )
            self._reported, self._reported_at = counts, now

    def refused(self) -> tuple[int, int]:
        """INVITEs refused so far: (untrusted source, other user)."""
        if self._lib is None:
            return (0, 0)
        return (self._lib.firmware_screen_refused(0), self._lib.firmware_screen_refused(1))


class _LogWriter(pj.LogWriter):
    """PJSIP's log lines into Python logging (any thread: logging is thread-safe)."""

    _LEVELS = {0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO}

    def write(self, entry: pj.LogEntry) -> None:
        try:
            logging.getLogger("pjsip").log(self._LEVELS.get(entry.level, logging.DEBUG), "%s", entry.msg.rstrip())
        except Exception:
            pass


class SipEngine:
    """Owns the PJSUA2 endpoint, transport, account and calls; speaks plain values to everyone else."""

    def __init__(
        self, config: Config, post: Callable[[EngineEvent], None], trusted: Iterable[Network] = ()
    ) -> None:
        self.config = config
        self.post = post
        self.trusted = list(trusted)  # where INVITEs may come from (resolved by the phone)
        self.screen = _InviteScreen()
        self.heartbeat = time.monotonic()
        self.sound_backend = "none"
        self.sound_devices: list[tuple[str, int, int]] = []
        #: The ALSA devices calls use (PJSUA2's names), or None with the null device.
        self.capture_device: str | None = None
        self.playback_device: str | None = None
        self.version = ""
        self._ep: pj.Endpoint | None = None
        self._account: _PhoneAccount | None = None
        self._calls: dict[int, _PhoneCall] = {}
        self._next_id = 1
        self._null_sound = True
        self._null_open = False
        self._players: dict[int, pj.AudioMediaPlayer] = {}  # sounds playing to the headset, by handle
        self._next_player = 1
        self._writer = _LogWriter()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop = threading.Event()
        self._start_error: BaseException | None = None
        self._attached: set[int] = set()
        # Ended calls waiting to be deleted on the engine thread: (when they ended, the call). Appended on
        # either thread, emptied on the engine thread; deque's append and popleft are atomic.
        self._ended: collections.deque[tuple[float, _PhoneCall]] = collections.deque()
        self._use_secondary = False
        self._transport_id = -1
        self._joined: set[frozenset[int]] = set()  # calls that hear each other (a conference), by call id
        self._lines: dict[str, _LineWatch] = {}  # colleagues' lines watched (dialog event package), by URI

    # --- lifecycle (phone thread) -----------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start the engine thread, the library, the transport and the account (registration begins).

        Callbacks may post events before this returns; the caller must call :meth:`attach_thread` on
        its own thread before it acts on any of them.
        """
        self._thread = threading.Thread(target=self._run, name="sip-engine", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise EngineError("the SIP engine did not start in time")
        if self._start_error is not None:
            raise EngineError(f"the SIP engine could not start: {self._start_error}") from self._start_error

    def attach_thread(self, name: str = "phone") -> None:
        """Let the calling thread use PJSUA2 (the phone's loop thread, once)."""
        ident = threading.get_ident()
        if ident in self._attached or self._ep is None:
            return
        if not self._ep.libIsThreadRegistered():
            self._ep.libRegisterThread(name)
        self._attached.add(ident)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the engine thread; it destroys the library. Hang up and unregister before (see Phone)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("the SIP engine thread did not stop within %.0f s", timeout)

    # --- the engine thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._create()
        except BaseException as e:  # reported by start()
            self._start_error = e
            self._started.set()
            self._destroy()
            return
        self._started.set()
        try:
            while not self._stop.is_set():
                self._ep.libHandleEvents(POLL_MS)
                self.heartbeat = time.monotonic()
                self.screen.report()
                self._release_ended(self.heartbeat - RELEASE_AFTER_S)
        except Exception:
            log.exception("the SIP engine loop failed")
        finally:
            self._destroy()

    def _create(self) -> None:
        cfg = self.config
        ep = self._ep = pj.Endpoint()
        ep.libCreate()
        ep_cfg = pj.EpConfig()
        ua = ep_cfg.uaConfig
        ua.threadCnt = 0  # no PJSIP worker thread: this thread polls, see the module docstring
        ua.mainThreadOnly = False
        ua.maxCalls = 4
        from firmware_app import __version__

        ua.userAgent = f"firmware-app/{__version__}"
        med = ep_cfg.medConfig
        med.hasIoqueue = False  # no media polling thread: RTP is read by this thread too
        med.threadCnt = 0
        med.clockRate = cfg.audio.clock_rate
        med.sndClockRate = cfg.audio.snd_clock_rate
        med.ecTailLen = cfg.audio.ec_tail_ms
        med.sndRecLatency = cfg.audio.capture_latency_ms
        med.sndPlayLatency = cfg.audio.playback_latency_ms
        med.sndAutoCloseTime = 1
        lc = ep_cfg.logConfig
        lc.writer = self._writer
        lc.decor = 0
        # PJSUA hands a line to the writer only up to consoleLevel (level is for its own log file).
        lc.level = lc.consoleLevel = 5 if cfg.logging.sip_trace else cfg.logging.pjsip_level
        lc.msgLogging = 1 if cfg.logging.sip_trace else 0
        ep.libInit(ep_cfg)
        self.version = ep.libVersion().full
        users = [cfg.account.user, *cfg.account.aliases]
        if self.screen.available:
            self.screen.start(self.trusted, users)
        else:
            log.warning(
                "this PJSUA2 build lacks the phone's INVITE screen and PJSIP patches (build it with "
                "image/pjsua2/build.sh): INVITEs from untrusted sources cost a call slot and media before they "
                "are refused, and a call slot reused soon after a call ended can be hung up"
            )

        acc_cfg = cfg.account
        kind = {
            "udp": pj.PJSIP_TRANSPORT_UDP,
            "tcp": pj.PJSIP_TRANSPORT_TCP,
            "tls": pj.PJSIP_TRANSPORT_TLS,
        }[acc_cfg.transport]
        tcfg = pj.TransportConfig()
        tcfg.port = acc_cfg.local_port
        if acc_cfg.bind_address:
            tcfg.boundAddress = acc_cfg.bind_address
        if acc_cfg.transport == "tls":
            sec = cfg.security
            tls = tcfg.tlsConfig
            tls.CaListFile = sec.tls_ca_file or SYSTEM_CA_BUNDLE
            tls.verifyServer = sec.tls_verify_server  # PJSIP's default is not to verify: a phone must
            tls.proto = pj.PJ_SSL_SOCK_PROTO_TLS1_2 | pj.PJ_SSL_SOCK_PROTO_TLS1_3
        transport_id = self._transport_id = ep.transportCreate(kind, tcfg)
        self._setup_sound()
        ep.libStart()

        self._account = _PhoneAccount(self)
        self._account.create(self._account_config(transport_id))

    def _account_config(self, transport_id: int) -> pj.AccountConfig:
        a = self.config.account
        domain = self.config.domain
        param = "" if a.transport == "udp" else f";transport={a.transport}"
        hostport = registrar_hostport(a.secondary_registrar if self._use_secondary else a.registrar)
        registrar = f"sip:{hostport}{param}"
        ac = pj.AccountConfig()
        name = a.display_name.replace('"', "")
        ac.idUri = f'"{name}" <sip:{a.user}@{domain}>' if name else f"sip:{a.user}@{domain}"
        ac.regConfig.registrarUri = registrar
        ac.regConfig.timeoutSec = a.reg_expiry
        ac.regConfig.retryIntervalSec = 0  # the phone's own bounded backoff decides, also after 401/403
        ac.regConfig.firstRetryIntervalSec = 0
        ac.regConfig.dropCallsOnFail = False
        ac.regConfig.unregWaitMsec = 2000
        ac.sipConfig.proxies.append(f"sip:{hostport}{param};lr")
        ac.sipConfig.transportId = transport_id
        ac.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", a.auth_user or a.user, 0, self.config.password))
        # PJSUA follows a multi-codec answer with a second re-INVITE to lock one codec; after a hold that
        # second re-INVITE races the REFER (491 from some peers). The first codec of the answer is used anyway.
        ac.mediaConfig.lockCodecEnabled = False
        ac.mediaConfig.srtpUse = {
            "disabled": pj.PJMEDIA_SRTP_DISABLED,
            "optional": pj.PJMEDIA_SRTP_OPTIONAL,
            "mandatory": pj.PJMEDIA_SRTP_MANDATORY,  # a plain RTP offer is refused with 488
        }[self.config.security.srtp]
        ac.mediaConfig.srtpSecureSignaling = 0
        ac.presConfig.publishEnabled = False
        ac.mwiConfig.enabled = a.mwi_subscribe  # unsolicited NOTIFYs (most PBXs) arrive either way
        ac.natConfig.iceEnabled = False
        ac.natConfig.sipStunUse = pj.PJSUA_STUN_USE_DISABLED
        ac.natConfig.mediaStunUse = pj.PJSUA_STUN_USE_DISABLED
        return ac

    def _setup_sound(self) -> None:
        """Select the configured ALSA devices, or the null device when this build or machine has none.

        Runs before ``libStart``. The device is opened once here (PJSUA2 2.17's setters only note the choice),
        so a broken one is an error at start rather than mid-call; ``libStart``'s idle check closes it a
        second later (``sndAutoCloseTime``) and PJSUA opens it again for each call and each sound played.
        """
        adm = self._ep.audDevManager()
        audio = self.config.audio
        devices = [adm.getDevInfo(i) for i in range(adm.getDevCount())]
        self.sound_devices = [(d.name, d.inputCount, d.outputCount) for d in devices]
        explicit = audio.capture_device != "default" or audio.playback_device != "default"
        if not devices:  # said once, here: e.g. the PyPI wheel, built --disable-sound
            unused = f" (audio devices {audio.capture_device!r}/{audio.playback_device!r} unused)" if explicit else ""
            log.log(
                logging.WARNING if explicit else logging.INFO,
                "this PJSUA2 build has no sound backend: calls use the null audio device%s",
                unused,
            )
            self._use_null_sound()
            return
        try:
            capture = self._choose_device(audio.capture_device, capture=True)
            playback = self._choose_device(audio.playback_device, capture=False)
        except LookupError as e:
            raise EngineError(f"{self.config.path}: {e.args[0]}") from None
        if capture is None or playback is None:
            log.warning("ALSA has no usable default sound device here: calls use the null audio device")
            self._use_null_sound()
            return
        names = f"{devices[capture].name} / {devices[playback].name}"
        try:
            adm.setCaptureDev(capture)
            adm.setPlaybackDev(playback)
            adm.setSndDevMode(0)  # open now (see above)
        except pj.Error as e:
            if explicit:
                raise EngineError(f"the configured sound device ({names}) cannot be opened: {e.reason}") from None
            log.warning("the default sound device cannot be opened (%s): calls use the null audio device", e.reason)
            self._use_null_sound()
            return
        self._null_sound = False
        self.capture_device, self.playback_device = devices[capture].name, devices[playback].name
        self.sound_backend = f"alsa ({names})"
        log.info(
            "sound: %s, device clock %s Hz, latency %s/%s ms, echo canceller %s",
            names,
            audio.snd_clock_rate or audio.clock_rate,
            audio.capture_latency_ms,
            audio.playback_latency_ms,
            f"{audio.ec_tail_ms} ms" if audio.ec_tail_ms else "off",
        )

    def _choose_device(self, name: str, *, capture: bool) -> int | None:
        """Index of the device ``name`` means among ``sound_devices`` (see :func:`alsa.choose`).

        None when ``name`` is "default" and ALSA has none; LookupError naming the key when nothing matches."""
        try:
            pcms, cards = alsa.pcms(), alsa.cards()
        except alsa.AlsaError:
            pcms, cards = [], []
        index = alsa.choose(self.sound_devices, name, capture=capture, pcms=pcms, cards=cards)
        if index is None and name != "default":
            what = "capture" if capture else "playback"
            listing = ", ".join(n for n, ins, outs in self.sound_devices if (ins if capture else outs)) or "none"
            raise LookupError(f"audio.{what}_device: no {what} device matches {name!r} ({what} devices here: {listing})")
        return index

    def route_audio(self, device: str | None) -> tuple[str, str]:
        """Move the calls' audio, now and for later calls, to the ALSA device ``device`` (both directions);
        None: back to the configured devices. Returns the ``(capture, playback)`` names now in use.

        PJSUA2's device list is refreshed first (``refreshDevs``), so a PCM that has become openable since
        the start (a Bluetooth headset's, once it connected) is found; a call in progress keeps its audio and
        switches to the new device at once. Phone thread; raises CommandError when no device matches.
        """
        if self._ep is None or self._stop.is_set():
            raise CommandError("the SIP engine is not running")
        audio = self.config.audio
        adm = self._ep.audDevManager()
        self._do("refresh the sound devices", adm.refreshDevs)
        devices = [adm.getDevInfo(i) for i in range(adm.getDevCount())]
        self.sound_devices = [(d.name, d.inputCount, d.outputCount) for d in devices]
        if not devices:
            raise CommandError("PJSUA2 lists no sound device (ALSA has none it can open, or this build has no sound)")
        try:
            capture = self._choose_device(device or audio.capture_device, capture=True)
            playback = self._choose_device(device or audio.playback_device, capture=False)
        except LookupError as e:
            raise CommandError(str(e).removeprefix("audio.capture_device: ").removeprefix("audio.playback_device: ")) from None
        if capture is None or playback is None:
            raise CommandError("ALSA has no usable default sound device")
        # Between calls only note the choice: opening a headset's SCO PCM without a call confuses headsets.
        # In a call the open device is switched at once. Set even when the index looks unchanged: after a
        # refresh PJSUA's remembered index may mean another device.
        self._do("set the sound device mode", lambda: adm.setSndDevMode(pj.PJSUA_SND_DEV_NO_IMMEDIATE_OPEN))
        self._do("switch the capture device", lambda: adm.setCaptureDev(capture))
        self._do("switch the playback device", lambda: adm.setPlaybackDev(playback))
        if self._null_sound:
            self._null_sound = self._null_open = False
        self.capture_device, self.playback_device = devices[capture].name, devices[playback].name
        self.sound_backend = f"alsa ({self.capture_device} / {self.playback_device})"
        log.info("sound: calls now use %s / %s", self.capture_device, self.playback_device)
        return self.capture_device, self.playback_device

    def _use_null_sound(self) -> None:
        self._null_sound = True
        self.capture_device = self.playback_device = None
        self.sound_backend = "null"
        # Between calls nothing should tick: the null device's clock alone costs 0.5 % of a core.
        self._ep.audDevManager().setNoDev()

    def _destroy(self) -> None:
        ep = self._ep
        if ep is None:
            return
        try:
            if self._calls:
                ep.hangupAllCalls()
                deadline = time.monotonic() + 2.0
                while any(c.isActive() for c in self._calls.values()) and time.monotonic() < deadline:
                    ep.libHandleEvents(20)
            self._calls.clear()
            self._ended.clear()
            self._players.clear()
            self._lines.clear()  # watched lines (Buddies) go on this thread, before their account
            # A saved traceback can keep a Call alive past libDestroy, which aborts (PJSUA2_NOTES rule 8).
            sys.last_traceback = sys.last_value = sys.last_type = None
            gc.collect()
            self._account = None
            gc.collect()
            # The phone already hung up and un-REGISTERed (and waited for the answers): skip PJSUA's own
            # second of waiting for the network at destroy.
            ep.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)
        except Exception:
            log.exception("the SIP engine did not shut down cleanly")
        finally:
            self._ep = None

    # --- called from callbacks ----------------------------------------------------------------------------

    def _new_call(self, direction: Direction, pj_call_id: int | None = None) -> _PhoneCall:
        call = _PhoneCall(self, self._next_id, direction, pj_call_id)
        self._next_id += 1
        self._calls[call.id] = call
        return call

    def _connect_audio(self, call: _PhoneCall, media: pj.AudioMedia) -> None:
        adm = self._ep.audDevManager()
        if self._null_sound and not self._null_open:
            adm.setNullDev()
            self._null_open = True
        media.startTransmit(adm.getPlaybackDevMedia())
        adm.getCaptureDevMedia().startTransmit(media)
        if call.mic_muted:  # a re-INVITE can give the call a new port, at full level
            media.adjustRxLevel(0.0)
        call.media_ready = True
        for pair in self._joined:  # a conference's calls hear each other again after a re-INVITE
            if call.id in pair:
                other = self._calls.get(next(i for i in pair if i != call.id))
                if other is not None:
                    self._bridge(call, other)

    def _call_ended(self, call: _PhoneCall) -> None:
        self._joined = {pair for pair in self._joined if call.id not in pair}
        if self._calls.pop(call.id, None) is not None:
            self._ended.append((time.monotonic(), call))
        if self._null_sound and self._null_open and not any(
            c.media_ready and c is not call and c.isActive() for c in self._calls.values()
        ):
            self._ep.audDevManager().setNoDev()
            self._null_open = False

    def _release_ended(self, before: float) -> None:
        """Delete the ``Call`` instances of calls that ended before ``before`` (engine thread)."""
        while self._ended and self._ended[0][0] < before:
            self._ended.popleft()

    def may_transfer_to(self, uri: str) -> bool:
        """Whether the far end may send this phone to ``uri`` (a REFER received): allowed domains only.

        A URI without a port matches a domain written with one (Linphone writes ``sip:1003@pbx`` for a
        PBX on ``pbx:5090``); when both name a port, it must be the same.
        """
        if not re.match(r"^sips?:", uri, re.IGNORECASE):
            return False
        host, port = _split_hostport(re.sub(r"^sips?:(?:[^@]*@)?", "", uri, flags=re.IGNORECASE).split(";", 1)[0])
        for domain in self.config.security.transfer_domains or [self.config.domain]:
            allowed_host, allowed_port = _split_hostport(domain)
            if host == allowed_host and (not port or not allowed_port or port == allowed_port):
                return True
        return False

    def reconcile(self) -> list[Call]:
        """Make the calls the engine holds agree with PJSUA's slots; returns the calls found ended (phone thread).

        Each call's end normally arrives through its state callback. Should one not (a slot PJSUA reset or
        gave to another call), the call is ended here and reported like any other end.
        """
        if self._ep is None or self._stop.is_set():
            return []
        ended = []
        now = time.monotonic()
        for call in list(self._calls.values()):
            slot = call.getId()
            if slot < 0:
                if now - call.created < UNBORN_CALL_S:
                    continue  # a call being made gets its slot in a moment
                why = "PJSUA never gave it a slot"
            else:
                try:
                    info = call.getInfo()
                except pj.Error:
                    info = None
                if info is not None and call.sip_call_id and info.callIdString != call.sip_call_id:
                    why = f"its slot {slot} now holds another call"
                elif info is None or info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                    why = f"PJSUA's slot {slot} has no live call"
                else:
                    continue
            log.warning("call %s: %s: ended", call.id, why)
            self._call_ended(call)
            last = call.last or Call(call.id, call.direction, CallState.ENDED, "", sip_call_id=call.sip_call_id)
            ended.append(dataclasses.replace(last, state=CallState.ENDED, status_code=0, reason="lost by PJSUA"))
        return ended

    def live_calls(self) -> set[int]:
        """The ids of the calls the engine holds (phone thread)."""
        return set(self._calls)

    # --- commands (phone thread) --------------------------------------------------------------------------

    def _call(self, call_id: int) -> _PhoneCall:
        if self._ep is None or self._stop.is_set():
            raise CommandError("the SIP engine is not running")
        try:
            return self._calls[call_id]
        except KeyError:
            raise CommandError(f"no call {call_id}") from None

    def _do(self, what: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except pj.Error as e:
            raise CommandError(f"{what}: {e.reason}") from None

    def register(self) -> None:
        if self._account is not None and not self._stop.is_set():
            self._do("register", lambda: self._account.setRegistration(True))

    def switch_registrar(self) -> str:
        """Use the other registrar (primary <-> secondary) from the next registration on; returns it."""
        self._use_secondary = not self._use_secondary
        a = self.config.account
        if self._account is not None and not self._stop.is_set():
            self._do("switch registrar", lambda: self._account.modify(self._account_config(self._transport_id)))
        return a.secondary_registrar if self._use_secondary else a.registrar

    def unregister(self) -> bool:
        """Send the un-REGISTER; False when there was no registration to remove."""
        if self._account is None or self._stop.is_set():
            return False
        if not self._account.getInfo().regIsActive:
            return False
        self._do("unregister", lambda: self._account.setRegistration(False))
        return True

    def ring(self, call_id: int) -> None:
        self._answer(call_id, 180)

    def answer(self, call_id: int) -> None:
        self._answer(call_id, 200)

    def reject(self, call_id: int, code: int, contact: str = "") -> None:
        """Answer ``code``; a 3xx with ``contact`` (a SIP URI) tells the caller where to call instead."""
        self._answer(call_id, code, contact)

    def _answer(self, call_id: int, code: int, contact: str = "") -> None:
        call = self._call(call_id)
        prm = pj.CallOpParam(True)
        prm.statusCode = code
        if contact:
            header = pj.SipHeader()
            header.hName, header.hValue = "Contact", f"<{contact}>"
            prm.txOption.headers.append(header)
        self._do(f"answer {code}", lambda: call.answer(prm))

    def hangup(self, call_id: int) -> None:
        call = self._call(call_id)
        prm = pj.CallOpParam()
        self._do("hang up", lambda: call.hangup(prm))

    def hangup_all(self) -> None:
        if self._ep is not None and not self._stop.is_set():
            self._ep.hangupAllCalls()

    def make_call(self, uri: str) -> int:
        if self._account is None or self._stop.is_set():
            raise CommandError("the SIP engine is not running")
        call = self._new_call(Direction.OUTGOING)
        prm = pj.CallOpParam(True)
        prm.opt.audioCount = 1
        prm.opt.videoCount = 0
        try:
            call.makeCall(uri, prm)
        except pj.Error as e:
            self._calls.pop(call.id, None)
            raise CommandError(f"cannot call {uri}: {e.reason}") from None
        return call.id

    def hold(self, call_id: int) -> None:
        call = self._call(call_id)
        self._do("hold", lambda: call.setHold(pj.CallOpParam()))

    def unhold(self, call_id: int) -> None:
        call = self._call(call_id)
        prm = pj.CallOpParam(True)
        prm.opt.flag = pj.PJSUA_CALL_UNHOLD
        self._do("resume", lambda: call.reinvite(prm))

    def transfer(self, call_id: int, uri: str) -> None:
        """Send REFER with ``Refer-To: <uri>`` (RFC 3515); PJSUA adds Referred-By, the dialog's local URI."""
        call = self._call(call_id)
        # PJSUA copies the string into Refer-To as it is: the angle brackets some PBXs insist on are ours.
        self._do("transfer", lambda: call.xfer(f"<{uri}>", pj.CallOpParam(True)))

    def transfer_replaces(self, call_id: int, other_id: int) -> None:
        """Attended transfer: REFER the far end of ``call_id`` to ``other_id``'s party (RFC 3891)."""
        call, other = self._call(call_id), self._call(other_id)
        self._do("attended transfer", lambda: call.xferReplaces(other, pj.CallOpParam(True)))

    def watch_lines(self, uris: Iterable[str]) -> None:
        """Subscribe to the dialog state of each URI not watched yet (phone thread)."""
        if self._account is None or self._stop.is_set():
            raise CommandError("the SIP engine is not running")
        for uri in uris:
            if uri in self._lines:
                continue
            cfg = pj.BuddyConfig()
            cfg.uri = uri
            cfg.subscribe = False  # presence would win over the dialog event package
            cfg.subscribe_dlg_event = True
            watch = _LineWatch(self, uri)
            self._do(f"watch {uri}", lambda: watch.create(self._account, cfg))
            self._lines[uri] = watch

    def rewatch_line(self, uri: str) -> None:
        """Subscribe again to a line whose subscription ended (phone thread)."""
        watch = self._lines.get(uri)
        if watch is not None and self._account is not None and not self._stop.is_set():
            self._do(f"watch {uri} again", watch.updateDlgEvent)

    def send_dtmf(self, call_id: int, digits: str) -> str:
        """Send ``digits`` in the call as RFC 4733 telephone-events, or as SIP INFO when the far end did not
        offer telephone-event. Returns the way it went: "rfc4733" or "info"."""
        call = self._call(call_id)
        try:
            call.dialDtmf(digits)
            return "rfc4733"
        except pj.Error:
            prm = pj.CallSendDtmfParam()
            prm.method = pj.PJSUA_DTMF_METHOD_SIP_INFO
            prm.digits = digits
            self._do("send DTMF", lambda: call.sendDtmf(prm))
            return "info"

    def join(self, call_id: int, other_id: int) -> None:
        """A three-way conference on PJSUA2's bridge: the two calls hear each other, and both the headset."""
        call, other = self._call(call_id), self._call(other_id)
        self._joined.add(frozenset((call.id, other.id)))
        self._bridge(call, other)

    def _bridge(self, call: _PhoneCall, other: _PhoneCall) -> None:
        if not (call.media_ready and other.media_ready):
            return  # joined once their audio is up (_connect_audio)
        try:
            media, other_media = call.getAudioMedia(-1), other.getAudioMedia(-1)
            media.startTransmit(other_media)
            other_media.startTransmit(media)
        except pj.Error as e:
            log.warning("conference of calls %s and %s: %s", call.id, other.id, e.reason)

    def set_mic_muted(self, call_id: int, muted: bool) -> None:
        """Mute what the call sends (the level the call's port takes from the conference bridge)."""
        call = self._call(call_id)
        call.mic_muted = muted
        ci = call.getInfo()
        for i, mi in enumerate(ci.media):
            if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status in (
                pj.PJSUA_CALL_MEDIA_ACTIVE,
                pj.PJSUA_CALL_MEDIA_REMOTE_HOLD,
            ):
                self._do("mute", lambda: call.getAudioMedia(i).adjustRxLevel(0.0 if muted else 1.0))

    def play_sound(self, path: str, *, loop: bool = False) -> int | None:
        """Play a WAV file to the call's playback device, mixed with any call audio (the far end hears none).

        Returns a handle for :meth:`stop_sound`, or None when calls use the null device (nothing to hear).
        The caller stops a sound that is not looped once it has played: no ``onEof2`` callback, which would
        come on PJSIP's sound thread. PJSUA opens the device for the sound and closes it a second after.
        """
        if self._ep is None or self._stop.is_set():
            raise CommandError("the SIP engine is not running")
        if self._null_sound:
            return None
        player = pj.AudioMediaPlayer()
        try:
            player.createPlayer(path, 0 if loop else pj.PJMEDIA_FILE_NO_LOOP)
            player.startTransmit(self._ep.audDevManager().getPlaybackDevMedia())
        except pj.Error as e:
            raise CommandError(f"cannot play {path}: {e.reason}") from None
        handle, self._next_player = self._next_player, self._next_player + 1
        self._players[handle] = player
        return handle

    def stop_sound(self, handle: int) -> None:
        """Stop a sound from :meth:`play_sound` (the player is dropped here, on the phone's thread)."""
        player = self._players.pop(handle, None)
        if player is None or self._ep is None:
            return
        try:
            player.stopTransmit(self._ep.audDevManager().getPlaybackDevMedia())
        except pj.Error as e:
            log.warning("stopping sound %s: %s", handle, e.reason)



def _split_hostport(value: str) -> tuple[str, str]:
    """``"Pbx.Example:5090"`` -> ``("pbx.example", "5090")``; IPv6 references keep their brackets."""
    value = value.strip().strip("<>").lower()
    if value.startswith("["):
        host, _, rest = value.partition("]")
        return host + "]", rest.removeprefix(":")
    host, _, port = value.partition(":")
    return host, port
