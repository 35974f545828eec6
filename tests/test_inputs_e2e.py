"""Physical controls end to end: a mock GPIO pin or a BLE notification reaches the wire as SIP.

The phone runs as the real process with gpiozero's MockFactory pins (driven through the pin_driver test
plugin inside it) or with BlueZ faked by BlueZoo on a private D-Bus bus; SIP is checked at Kamailio.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.inputs.fake_bluez import BUTTON, FakeBluez, FakeButton
from tests.phone_process import wait
from tests.test_transfer_sip import TRANSFER_CONFIG, assert_seed_ladder

GPIO = """
[plugins]
modules = ["tests.plugins.pin_driver"]

[gpio.buttons.main]
pin = 17
"""


def gpio_phone(phone_factory, extra=""):
    return phone_factory(extra=GPIO + extra, env={"GPIOZERO_PIN_FACTORY": "mock"}).start()


def ring(phone, caller, kamailio):
    caller.dial(kamailio.uri("1000"))
    phone.wait_state("ringing")


def test_a_pin_press_answers_a_ringing_call(phone_factory, baresip_factory, kamailio):
    phone = gpio_phone(phone_factory)
    caller = baresip_factory("1001")
    ring(phone, caller, kamailio)
    phone.cli("action", "press_pin:17:80")
    ok = kamailio.wait_for(lambda m: m.source == phone.source and m.method == "INVITE" and m.status == 200)
    assert ok.kind == "reply"
    caller.wait_event("CALL_ESTABLISHED")
    pressed = phone.wait_event(lambda e: e["event"] == "input")
    assert (pressed["source"], pressed["button"], pressed["gesture"]) == ("gpio", "main", "single")


def test_a_double_pin_press_blind_transfers(phone_factory, baresip_factory, sipp_target_factory, kamailio):
    phone = gpio_phone(phone_factory, TRANSFER_CONFIG)
    caller = baresip_factory("1001")
    sipp_target_factory("1003", "answer")
    ring(phone, caller, kamailio)
    phone.cli("action", "press_pin:17:80")
    caller.wait_event("CALL_ESTABLISHED")
    phone.wait_state("in_call")
    call_id = phone.status()["calls"][0]["sip_call_id"]
    phone.cli("action", "press_pin:17:80:120:80")  # press, 120 ms apart, press: a double
    phone.wait_event(lambda e: e["event"] == "transfer" and e["state"] == "succeeded")
    assert_seed_ladder(kamailio, phone, caller, call_id, "1003")


class BluetoothWorld:
    """BlueZoo on a private bus and a BLE button served from a loop thread of the test process."""

    def __init__(self, workdir) -> None:
        self.bluez = FakeBluez(workdir).start()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.button = self.run(FakeButton(self.bluez.address).start())
        self.run(self.button.serve())
        self.run(self.button.advertise())

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(15)

    def press(self) -> None:
        async def click() -> None:
            self.button.notify(b"\x01")
            await asyncio.sleep(0.05)
            self.button.notify(b"\x00")

        self.run(click())

    def close(self) -> None:
        try:
            self.run(self.button.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.bluez.stop()


@pytest.fixture
def bluetooth(tmp_path):
    (tmp_path / "bluez").mkdir()
    world = BluetoothWorld(tmp_path / "bluez")
    yield world
    world.close()


BLE = f"""
[ble]
adapter = "hci0"
scan_timeout_s = 2.5
retry_first_s = 0.2
retry_max_s = 0.5

[ble.devices.shutter]
address = "{BUTTON}"
characteristic = "ff01"

[ble.devices.shutter.buttons.main]
press = ["01"]
release = ["00"]
min_press_ms = 0
"""


def test_a_ble_notification_answers_a_ringing_call(phone_factory, baresip_factory, kamailio, bluetooth):
    phone = phone_factory(extra=BLE, env={"DBUS_SYSTEM_BUS_ADDRESS": bluetooth.bluez.address}).start()
    # it may connect before the test's event stream opens: the log line is the witness
    wait(lambda: "ble shutter: connected" in phone.log(), 15, "the BLE button to connect", phone)
    caller = baresip_factory("1001")
    ring(phone, caller, kamailio)
    bluetooth.press()
    kamailio.wait_for(lambda m: m.source == phone.source and m.method == "INVITE" and m.status == 200)
    caller.wait_event("CALL_ESTABLISHED")
    pressed = phone.wait_event(lambda e: e["event"] == "input")
    assert (pressed["source"], pressed["button"], pressed["gesture"]) == ("ble", "main", "single")
