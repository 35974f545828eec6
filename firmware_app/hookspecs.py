"""The whole plugin contract of the phone: every hook a plugin may implement.

Plugins implement hooks with ``from firmware_app import hookimpl`` and hold the phone through the
:class:`Phone` protocol below (``from firmware_app import Phone``), never the phone's own classes. Every hook
runs on the phone's one plugin thread (an asyncio loop), so a plugin never needs a lock, and never sees a
PJSUA2 object: only the plain values of :mod:`firmware_app.model`. A hook that raises is logged with the
plugin's name and traceback and the phone carries on as if that plugin had returned nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

import pluggy

from firmware_app.model import (
    ButtonEvent,
    Call,
    CallState,
    IncomingAction,
    MessageWaiting,
    PhoneState,
    Refusal,
    Registration,
    TransferStatus,
)

if TYPE_CHECKING:
    from firmware_app.config import Config

hookspec = pluggy.HookspecMarker("firmware_app")


class Phone(Protocol):
    """What a plugin may ask of the phone and tell it to do: the ``phone`` of :func:`softphone_startup` and of
    every action. Call it on the phone's thread (hooks and actions run there); from another thread only
    :meth:`input` and :meth:`call_soon_threadsafe`. Commands raise :class:`firmware_app.errors.CommandError`
    with a reason a person can read when they cannot be carried out now."""

    # --- what the phone is doing
    @property
    def state(self) -> PhoneState: ...
    @property
    def registration(self) -> Registration: ...
    @property
    def sound_devices(self) -> tuple[str | None, str | None]:
        """The ALSA devices calls use, ``(capture, playback)``; None with the null device."""
    def calls(self) -> list[Call]:
        """Every call that has not ended."""
    def get_call(self, call_id: int) -> Call | None: ...
    def current_call(self, *states: CallState) -> Call:
        """The call a button acts on (the ringing one first), optionally only among ``states``."""
    def complete_uri(self, target: str) -> str:
        """``"1003"`` -> ``"sip:1003@<the account's domain>"``; a SIP URI stays as it is."""

    # --- calls (``call_id`` None: the current call)
    def answer(self, call_id: int | None = None) -> Call: ...
    def reject(self, call_id: int | None = None, code: int | None = None, contact: str = "") -> Call:
        """Refuse a ringing call with ``code`` (the account's ``reject_code``); a 3xx with ``contact`` redirects it."""
    def hangup(self, call_id: int | None = None) -> Call:
        """End a call: ``call_id``, else the one in progress (a waiting call goes on ringing), else the ringing one."""
    def dial(self, target: str) -> int: ...
    async def hold(self, call_id: int | None = None, timeout: float = 5.0) -> bool:
        """Hold and wait for the far end's confirmation; False when it did not come in ``timeout`` s."""
    def resume(self, call_id: int | None = None) -> Call: ...
    def set_mic_muted(self, muted: bool, call_id: int | None = None) -> Call: ...
    def send_dtmf(self, digits: str, call_id: int | None = None) -> str:
        """Send DTMF digits (0-9, * # A-D) in the call in progress: RFC 4733, or SIP INFO when the far end
        offered no telephone-event; returns which ("rfc4733" or "info")."""
    def watch_lines(self, targets: Iterable[str]) -> None:
        """Follow colleagues' lines through the registrar (RFC 4235 dialog events): numbers or SIP URIs.
        Their states come to :func:`softphone_line_state_changed` and :meth:`line_states`."""
    def line_states(self) -> dict[str, str]:
        """Each watched line's state by URI: ``idle``, ``ringing``, ``busy`` or ``unknown``."""
    def conference(self) -> list[Call]:
        """Join the two calls (one may be held: it is resumed) so all three parties hear each other."""

    # --- transfers
    async def refer(
        self, call_id: int, uri: str, on_progress: Callable[[int, str], None] | None = None
    ) -> tuple[int, str]:
        """REFER the far end to ``uri``; the first final outcome ``(status, reason)``, ``(0, reason)`` when the
        call ended first. Progress (100, 180) goes to ``on_progress``. Bound the wait yourself."""
    async def refer_replaces(
        self, call_id: int, other_id: int, on_progress: Callable[[int, str], None] | None = None
    ) -> tuple[int, str]:
        """Attended transfer: REFER the far end of ``call_id`` to ``other_id``'s party with Replaces."""
    def set_transferring(self, call_id: int, transferring: bool) -> None: ...
    def report_transfer(self, status: TransferStatus) -> None:
        """Tell every plugin (:func:`softphone_transfer_status`) and the event stream how a transfer goes."""

    # --- sound on the headset
    def route_audio(self, device: str | None) -> tuple[str | None, str | None]:
        """Move the calls' audio (a call in progress too) to the ALSA device ``device``, both directions;
        None: back to the configured ``[audio]`` devices. The device list is refreshed first, so a PCM that
        became openable since the start is found. Returns :attr:`sound_devices`."""
    def play_sound(self, path: str, *, loop: bool = False) -> int | None:
        """Play a WAV file to the calls' playback device; a handle for :meth:`stop_sound`, None without sound."""
    def stop_sound(self, handle: int) -> None: ...

    # --- actions and input
    def actions(self) -> list[str]: ...
    async def run_action(self, action: str) -> Any:
        """Run ``name`` or ``name:argument`` as a button would."""
    def input(self, event: ButtonEvent) -> None:
        """Hand over a button event; safe from any thread."""
    def map_input(self, event: ButtonEvent) -> str | None:
        """The action this gesture would run now (the button mapping), without running it; None: nothing."""
    def wants_double(self, source: str, button: str) -> bool:
        """Whether a double press of this button means something now (see :func:`softphone_wants_double`)."""

    # --- events, status and scheduling
    def emit(self, event: str, **fields: Any) -> None:
        """Put a plugin's own event (``volume``, ``led``...) on the control socket's event stream."""
    def subscribe(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Follow the event stream (what ``firmware-app events`` prints); returns the unsubscribe function."""
    def publish_status(self, name: str, value: Any) -> None:
        """Show this plugin's state (plain JSON values) under ``name`` in ``firmware-app status``."""
    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a coroutine on the phone's loop; it is cancelled when the phone stops, its failure logged."""
    def call_soon(self, callback: Callable[..., object], *args: Any) -> asyncio.Handle:
        """Run ``callback`` on the phone's thread once the current hook has returned."""
    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> asyncio.TimerHandle: ...
    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> asyncio.Handle:
        """From a device's own thread (gpiozero, a player): run ``callback`` on the phone's thread."""


class ActionHandler(Protocol):
    """Carries out an action. ``argument`` is what follows the colon in ``transfer:reception``."""

    def __call__(self, phone: Phone, argument: str | None) -> Awaitable[Any] | Any: ...


RegisterAction = Callable[[str, ActionHandler], None]


# --- lifecycle -------------------------------------------------------------------------------------------


@hookspec
def softphone_configure(config: Config) -> None:
    """Read and check this plugin's own configuration.

    Called once after the file was loaded, by ``run`` and by ``check-config`` alike, before anything
    starts. ``config.section(name)`` returns a plugin's table and marks it as known; use
    :func:`firmware_app.config.convert` to turn it into a typed value. Raise
    :class:`firmware_app.errors.ConfigError` for a mistake: it names the file, the key and what was expected.

    Input plugins declare each control they read with ``config.declare_control(source, button)``. A plugin
    that checks control names (the button mapping) implements this hook with ``@hookimpl(trylast=True)``:
    it then runs after every plugin declared its controls and can reject a name none of them reads.
    """


@hookspec
def softphone_startup(phone: Phone) -> None:
    """The phone is up: the SIP engine runs and registration has been started.

    ``phone`` is the plugin's handle on the phone: calls, actions, events. Start devices and tasks here.
    """


@hookspec
def softphone_shutdown(phone: Phone) -> None:
    """The phone is stopping. Release devices, cancel tasks. Called in reverse load order."""


# --- registration ----------------------------------------------------------------------------------------


@hookspec
def softphone_registration_changed(registration: Registration) -> None:
    """The account's registration changed (registered, failed with a code, unregistered)."""


# --- calls -----------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def softphone_incoming_call(call: Call) -> IncomingAction | None:
    """A call came in. Return whether to ring it, answer it at once or reject it.

    The first plugin to return something decides; when none does, the call rings.
    """


@hookspec(firstresult=True)
def softphone_screen_call(call: Call, busy_with: Call | None) -> Refusal | None:
    """A call came in from a trusted source; before anything rings, a plugin may refuse it.

    Return a :class:`firmware_app.model.Refusal` (do not disturb: 486/480/603; forwarding: 302 with a
    contact) and the call is answered with it and never becomes one of the phone's calls (no other hook
    hears of it; the event stream gets ``call_refused``). ``busy_with`` is the call in progress, if any. The
    first plugin to return one decides; None lets the call go on.
    """


@hookspec
def softphone_call_state_changed(call: Call, previous: CallState | None) -> None:
    """A call changed state. ``previous`` is None for a call the phone just learnt of."""


@hookspec
def softphone_call_waiting(call: Call, busy_with: Call, code: int) -> None:
    """A call came in while the phone was busy with ``busy_with``: it was refused with ``code`` (486) and is
    never one of the phone's calls (no :func:`softphone_call_state_changed` for it). For a call-waiting cue."""


@hookspec
def softphone_line_state_changed(uri: str, state: str) -> None:
    """A watched colleague's line (:meth:`Phone.watch_lines`) changed: ``idle``, ``ringing``, ``busy`` or
    ``unknown`` (the subscription ended; the phone subscribes again). For busy-lamp LEDs and transfers."""


@hookspec
def softphone_dtmf_received(call: Call, digit: str) -> None:
    """The far end of ``call`` sent a DTMF digit (0-9, *, #, A-D), by RFC 4733 or SIP INFO."""


@hookspec
def softphone_phone_state_changed(state: PhoneState, previous: PhoneState) -> None:
    """The phone as a whole changed state (idle, ringing, in call, on hold, transferring): for LEDs and tones."""


@hookspec
def softphone_message_waiting(status: MessageWaiting) -> None:
    """The PBX reported voicemail for the account (SIP MWI, RFC 3842): waiting or not, and how many.

    For a message-waiting lamp (the GPIO status LED blinks its ``message_waiting`` pattern while idle).
    Fired for each message summary the account receives, changed or not; never while the engine does not
    subscribe to MWI.
    """


# --- transfer --------------------------------------------------------------------------------------------


@hookspec
def softphone_transfer_status(status: TransferStatus) -> None:
    """A transfer started, progressed, succeeded or failed. Failure means the caller is back on the line."""


# --- input -----------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def softphone_map_input(event: ButtonEvent, state: PhoneState) -> str | None:
    """Map a button gesture in the current phone state to an action name (``"answer"``, ``"transfer:desk"``).

    The first plugin to return a name wins; return None to leave the event to others, and "" to take it
    without any action (a duplicate of an event another input already reported).
    """


@hookspec
def softphone_wants_double(source: str, button: str, state: PhoneState) -> bool | None:
    """Whether a double press of this button means something in this state.

    Input plugins ask this before reporting a single press: only when some plugin says True do they wait to
    see whether a second press follows, so a single press acts at once otherwise.
    """


@hookspec
def softphone_register_actions(register: RegisterAction) -> None:
    """Contribute actions: call ``register(name, handler)`` for each.

    Buttons, the CLI and other plugins run them by name, with an optional argument after a colon.
    """


# --- diagnosis -------------------------------------------------------------------------------------------


@hookspec
def softphone_doctor(config: Config) -> dict[str, Any] | None:
    """What this plugin finds on the machine, for ``firmware-app doctor`` (the phone need not run).

    Return ``{"name": "usb_headset", "lines": [...], "problems": [...], "data": {...}}``: ``lines`` are what a
    person reads (one finding each), ``problems`` what needs their attention (each becomes one of the
    report's problems), ``data`` plain JSON values for fleet tools. None: nothing to say. Look, do not touch:
    no device is opened for writing and nothing is changed.
    """

