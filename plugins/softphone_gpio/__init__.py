"""Plugin: GPIO push buttons, hook switches and status LEDs through gpiozero (see README.md here).

```toml
[gpio.buttons.main]      # a push button from BCM 17 to ground
pin = 17
[gpio.buttons.hook]      # a hook switch: closed (low) while the handset is lifted
pin = 22
kind = "level"
[gpio.leds.status]       # an LED from BCM 27 through a resistor to ground
pin = 27
```
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import Meta

from firmware_app import Phone, hookimpl
from firmware_app.config import Config
from firmware_app.errors import CommandError, ConfigError
from firmware_app.extras import import_extra
from firmware_app.gestures import ControlKind, TimingConfig
from firmware_app.inputs import Backoff, DeviceStatus, InputControl
from firmware_app.model import (
    MessageWaiting,
    PhoneState,
    Registration,
    RegistrationState,
    TransferState,
    TransferStatus,
)

if TYPE_CHECKING:
    from gpiozero import LED, DigitalInputDevice

log = logging.getLogger("firmware_app.gpio")

SOURCE = "gpio"
BcmPin = Annotated[int, Meta(ge=0, le=27)]  # the 40-pin header's GPIO numbers, on every Pi model

# --- configuration ---------------------------------------------------------------------------------------


class ButtonConfig(TimingConfig, kw_only=True, frozen=True, forbid_unknown_fields=True):
    pin: BcmPin
    kind: Literal["button", "level"] = "button"  # "level": a hook or cradle switch (down/up)
    pull: Literal["up", "down", "off"] = "up"  # "off": an external resistor holds the line
    active: Literal["low", "high"] | None = None  # default: low with pull "up", high with pull "down"
    bounce_ms: Annotated[int, Meta(ge=0, le=500)] = 0  # gpiozero's own filter; 0 relies on min_press_ms

    def active_high(self) -> bool:
        if self.active is not None:
            return self.active == "high"
        return self.pull == "down"


#: A pattern: "off", "on", a built-in name, or [[on_s, off_s], ...] repeated for as long as it shows.
Pattern = Literal["off", "on", "fast", "slow", "double", "triple", "flicker", "blip", "wink"] | list[
    tuple[Annotated[float, Meta(ge=0.02, le=10)], Annotated[float, Meta(ge=0.02, le=10)]]
]

PATTERNS: dict[str, tuple[tuple[float, float], ...]] = {
    "fast": ((0.125, 0.125),),
    "slow": ((0.5, 0.5),),
    "double": ((0.1, 0.1), (0.1, 0.7)),
    "triple": ((0.08, 0.12), (0.08, 0.12), (0.08, 0.92)),
    "flicker": ((0.05, 0.05),),
    "blip": ((0.1, 2.9),),
    "wink": ((1.8, 0.2),),  # mostly on
}


class StatusPatterns(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """What a status LED shows, by what the phone is doing (first match from the top)."""

    transfer_failed: Pattern = "flicker"  # for transfer_failed_ms after a transfer failed
    transferring: Pattern = "double"
    ringing: Pattern = "fast"
    waiting: Pattern = "fast"  # another call rings while one is up (call waiting)
    in_call: Pattern = "on"
    on_hold: Pattern = "slow"
    updating: Pattern = "triple"  # a software update downloads, installs, or restarts the device
    not_registered: Pattern = "off"
    dnd: Pattern = "wink"  # do not disturb (calls are refused)
    message_waiting: Pattern = "blip"  # voicemail waiting (SIP MWI)
    idle: Pattern = "off"


class LinePatterns(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """What a colleague's busy lamp shows (role "line"), by the state of their line."""

    idle: Pattern = "off"
    ringing: Pattern = "fast"
    busy: Pattern = "on"
    unknown: Pattern = "off"  # not known yet, or the registrar stopped telling


class LedConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    pin: BcmPin
    active: Literal["high", "low"] = "high"  # "low": the LED is wired from 3.3 V to the pin
    role: Literal["status", "line"] = "status"  # the phone's status, or a colleague's line (busy lamp)
    line: str = ""  # role "line": the colleague's number or SIP URI, watched through the registrar
    patterns: StatusPatterns = StatusPatterns()
    line_patterns: LinePatterns = LinePatterns()
    transfer_failed_ms: Annotated[int, Meta(ge=100, le=60_000)] = 3000


class GpioConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    buttons: dict[str, ButtonConfig] = {}
    leds: dict[str, LedConfig] = {}
    retry_max_s: Annotated[float, Meta(ge=1, le=3600)] = 60.0  # a busy pin is tried again up to this often


# --- what a status LED shows -----------------------------------------------------------------------------


def status_condition(
    state: PhoneState, registered: bool, message_waiting: bool, transfer_failed: bool, dnd: bool = False,
    updating: bool = False,
) -> str:
    """The row of :class:`StatusPatterns` that applies: calls first, then an update, registration, do not
    disturb, voicemail."""
    if transfer_failed and state in (PhoneState.IN_CALL, PhoneState.WAITING, PhoneState.ON_HOLD, PhoneState.TRANSFERRING):
        return "transfer_failed"
    if state is PhoneState.TRANSFERRING:
        return "transferring"
    if state is PhoneState.RINGING:
        return "ringing"
    if state is PhoneState.WAITING:
        return "waiting"
    if state is PhoneState.IN_CALL:
        return "in_call"
    if state is PhoneState.ON_HOLD:
        return "on_hold"
    if updating:
        return "updating"
    if not registered:
        return "not_registered"
    if dnd:
        return "dnd"
    return "message_waiting" if message_waiting else "idle"


class StatusLed:
    """One LED showing the phone's status; patterns run as a task on the phone's loop."""

    def __init__(self, name: str, led: LED, config: LedConfig, phone: Phone) -> None:
        self.name, self.led, self.config, self.phone = name, led, config, phone
        self.condition: str | None = None
        self._task: asyncio.Task[None] | None = None

    def show(self, condition: str) -> None:
        if condition == self.condition:
            return
        self.condition = condition
        self._stop()
        patterns = self.config.line_patterns if self.config.role == "line" else self.config.patterns
        pattern = getattr(patterns, condition)
        if pattern == "on":
            self.led.on()
        elif pattern == "off":
            self.led.off()
        else:
            steps = PATTERNS[pattern] if isinstance(pattern, str) else tuple(pattern)
            self._task = self.phone.spawn(self._play(steps))
        self.phone.emit("led", name=self.name, condition=condition)

    async def _play(self, steps: tuple[tuple[float, float], ...]) -> None:
        while True:
            for on_s, off_s in steps:
                self.led.on()
                await asyncio.sleep(on_s)
                self.led.off()
                await asyncio.sleep(off_s)

    def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
            self.led.off()  # a pattern cut short may have left it lit: the next one starts from dark

    def close(self) -> None:
        self._stop()
        try:
            self.led.off()
        finally:
            self.led.close()


# --- the plugin ------------------------------------------------------------------------------------------


class GpioPlugin:
    def __init__(self) -> None:
        self.config = GpioConfig()
        self.phone: Phone | None = None
        self.controls: dict[str, InputControl] = {}
        # gpiozero devices by "buttons.NAME"/"leds.NAME": keep them alive (a collected one stops firing)
        self.devices: dict[str, DigitalInputDevice | LED] = {}
        self.leds: dict[str, StatusLed] = {}
        self.status: dict[str, DeviceStatus] = {}
        self.enabled = False  # something is configured and gpiozero is installed
        self._retry: asyncio.Task[None] | None = None
        self._registered = False
        self._waiting = False
        self._dnd = False
        self._updating = False
        self._unsubscribe: Any = None
        self._transfer_failed: asyncio.TimerHandle | None = None

    @hookimpl
    def softphone_configure(self, config: Config) -> None:
        self.config = config.convert(config.section("gpio"), GpioConfig, "gpio")
        pins: dict[int, str] = {}
        for group, table in (("buttons", self.config.buttons), ("leds", self.config.leds)):
            for name, item in table.items():
                key = f"gpio.{group}.{name}"
                if item.pin in pins:
                    raise ConfigError(str(config.path), f"{key}.pin", f"GPIO{item.pin} is already used by {pins[item.pin]}")
                pins[item.pin] = key
                if group == "buttons":
                    if item.pull == "off" and item.active is None:
                        raise ConfigError(
                            str(config.path), f"{key}.active", 'is required with pull = "off" ("low" or "high")'
                        )
                    config.declare_control(SOURCE, name)
                elif item.role == "line" and not item.line.strip():
                    raise ConfigError(str(config.path), f"{key}.line", 'is required with role = "line" (a number or SIP URI)')
                elif item.role == "status" and item.line:
                    raise ConfigError(str(config.path), f"{key}.line", 'only a role = "line" LED watches a line')
        self.enabled = bool(self.config.buttons or self.config.leds) and import_extra(
            log, "softphone_gpio", "gpio", ["gpiozero"], "the phone runs without its GPIO buttons and LEDs"
        )

    @hookimpl
    def softphone_startup(self, phone: Phone) -> None:
        if not self.enabled:
            return
        self.phone = phone
        self._registered = phone.registration.state is RegistrationState.REGISTERED
        self._unsubscribe = phone.subscribe(self._on_event)
        if not self._open_all():
            self._retry = phone.spawn(self._retry_missing())

    @hookimpl
    def softphone_shutdown(self, phone: Phone) -> None:
        if self.phone is None:  # never started (nothing configured, or no gpiozero), or stopped already
            return
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._transfer_failed is not None:
            self._transfer_failed.cancel()
            self._transfer_failed = None
        for control in self.controls.values():
            control.close()
        for led in self.leds.values():
            led.close()
        for key, device in self.devices.items():
            if not key.startswith("leds."):
                device.close()
        self.controls.clear()
        self.leds.clear()
        self.devices.clear()
        self.phone = None

    # --- status LEDs ------------------------------------------------------------------------------------

    @hookimpl
    def softphone_phone_state_changed(self, state: PhoneState, previous: PhoneState) -> None:
        if state not in (PhoneState.IN_CALL, PhoneState.WAITING, PhoneState.ON_HOLD, PhoneState.TRANSFERRING):
            self._end_transfer_failed()
        self._refresh()

    @hookimpl
    def softphone_registration_changed(self, registration: Registration) -> None:
        self._registered = registration.state is RegistrationState.REGISTERED
        self._refresh()

    @hookimpl
    def softphone_message_waiting(self, status: MessageWaiting) -> None:
        self._waiting = status.waiting
        self._refresh()

    @hookimpl
    def softphone_transfer_status(self, status: TransferStatus) -> None:
        if status.state is TransferState.FAILED and self.phone is not None:
            if self._transfer_failed is not None:
                self._transfer_failed.cancel()
            seconds = max((led.config.transfer_failed_ms for led in self.leds.values()), default=3000) / 1000
            self._transfer_failed = self.phone.call_later(seconds, self._end_transfer_failed)
            self._refresh()

    def _on_event(self, event: dict[str, Any]) -> None:
        """Do not disturb is the calls plugin's: its ``dnd`` events say when it changes. A software update
        says what it does through ``update`` events."""
        if event.get("event") == "dnd" and bool(event.get("on")) != self._dnd:
            self._dnd = bool(event.get("on"))
            self._refresh()
        elif event.get("event") == "update" and bool(event.get("state")) != self._updating:
            self._updating = bool(event.get("state"))  # "" when no update is under way
            self._refresh()

    def _end_transfer_failed(self) -> None:
        if self._transfer_failed is not None:
            self._transfer_failed.cancel()
            self._transfer_failed = None
            self._refresh()

    def _refresh(self) -> None:
        if self.phone is None:
            return
        condition = status_condition(
            self.phone.state, self._registered, self._waiting, self._transfer_failed is not None, self._dnd,
            self._updating,
        )
        for led in self.leds.values():
            if led.config.role == "status":
                led.show(condition)

    @hookimpl
    def softphone_line_state_changed(self, uri: str, state: str) -> None:
        if self.phone is None:
            return
        for led in self.leds.values():
            if led.config.role == "line" and self.phone.complete_uri(led.config.line) == uri:
                led.show(state)

    # --- devices ----------------------------------------------------------------------------------------

    def _open_all(self) -> bool:
        """Open every device not open yet; True when none is left to try again."""
        from gpiozero.exc import BadPinFactory, PinFactoryFallback

        with warnings.catch_warnings():  # one line says it all: not one warning per factory tried
            warnings.simplefilter("ignore", PinFactoryFallback)
            try:
                retry = self._open_missing()
            except BadPinFactory as e:
                self._no_gpio(e)
                retry = False
        self._refresh()
        return not retry

    def _open_missing(self) -> bool:
        """Whether some device could not be opened and is worth another try."""
        from gpiozero.exc import BadPinFactory

        assert self.phone is not None
        retry = False
        for group, table in (("buttons", self.config.buttons), ("leds", self.config.leds)):
            for name, item in table.items():
                key = f"{group}.{name}"
                if key in self.devices:
                    continue
                status = self.status.setdefault(key, DeviceStatus(log, SOURCE, f"{key} (GPIO{item.pin})", self.phone))
                try:
                    if group == "buttons":
                        self._open_button(name, item)
                    else:
                        self._open_led(name, item)
                except BadPinFactory:
                    raise
                except Exception as e:  # a busy line, a missing chip: say it once, try again later
                    status.set("unavailable", f"{type(e).__name__}: {e}; retrying", level=logging.WARNING)
                    retry = True
                else:
                    status.set("ready")
        return retry

    def _no_gpio(self, error: Exception) -> None:
        log.error(
            "gpio: no GPIO on this machine (%s); the phone runs without its GPIO buttons and LEDs. "
            "On a Pi install lgpio; elsewhere set GPIOZERO_PIN_FACTORY=mock to try it out",
            error,
        )
        assert self.phone is not None
        self.phone.emit("input_device", source=SOURCE, device="gpio", state="unavailable")

    def _open_button(self, name: str, item: ButtonConfig) -> None:
        # Not gpiozero's Button: its hold-detection thread wakes ten times a second forever (measured: 0.13 %
        # of a core on an idle phone); the gesture recognizer times long presses itself on the phone's loop.
        from gpiozero import DigitalInputDevice

        assert self.phone is not None
        # gpiozero ties a pull-up to active-low; a normally closed contact (a hook switch that opens when
        # the handset is lifted) pulls up yet is active high, so give the active level and set the pull.
        button = DigitalInputDevice(
            item.pin,
            pull_up=None,
            active_state=item.active_high(),
            bounce_time=item.bounce_ms / 1000 if item.bounce_ms else None,
        )
        try:
            if item.pull != "off":
                button.pin.pull = item.pull
            control = InputControl(self.phone, SOURCE, name, ControlKind(item.kind), item.timing(), initial=bool(button.is_active))
        except BaseException:
            button.close()
            raise
        button.when_activated = lambda: control.edge_threadsafe(True)
        button.when_deactivated = lambda: control.edge_threadsafe(False)
        self.devices[f"buttons.{name}"] = button
        self.controls[name] = control

    def _open_led(self, name: str, item: LedConfig) -> None:
        from gpiozero import LED

        assert self.phone is not None
        led = LED(item.pin, active_high=item.active == "high", initial_value=False)
        self.devices[f"leds.{name}"] = led
        self.leds[name] = StatusLed(name, led, item, self.phone)
        if item.role == "line":
            uri = self.phone.complete_uri(item.line)
            try:
                self.phone.watch_lines([uri])
            except CommandError as e:
                log.warning("led %s: cannot watch %s: %s", name, uri, e)
            self.leds[name].show(self.phone.line_states().get(uri, "unknown"))

    async def _retry_missing(self) -> None:
        backoff = Backoff(1.0, self.config.retry_max_s)
        while True:
            await asyncio.sleep(backoff.next())
            if self._open_all():
                return
