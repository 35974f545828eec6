"""The whole plugin contract of the phone: every hook a plugin may implement.

Plugins implement hooks with ``from firmware_app import hookimpl``. Every hook runs on the phone's one
plugin thread (an asyncio loop), so a plugin never needs a lock, and never sees a PJSUA2 object: only the
plain values of :mod:`firmware_app.model`. A hook that raises is logged with the plugin's name and traceback
and the phone carries on as if that plugin had returned nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

import pluggy

from firmware_app.model import (
    ButtonEvent,
    Call,
    CallState,
    IncomingAction,
    MessageWaiting,
    PhoneState,
    Registration,
    TransferStatus,
)

if TYPE_CHECKING:
    from firmware_app.config import Config
    from firmware_app.phone import Phone

hookspec = pluggy.HookspecMarker("firmware_app")


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


@hookspec
def softphone_call_state_changed(call: Call, previous: CallState | None) -> None:
    """A call changed state. ``previous`` is None for a call the phone just learnt of."""


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

    The first plugin to return a name wins; return None to leave the event to others.
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
