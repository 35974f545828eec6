"""A fake BlueZ, as small as bluealsa lets it be, for the phone's Bluetooth headset tests.

On the phone, bluealsa (bluez-alsa 4.0.0, the audio gateway for the users' headsets) asks BlueZ for two
things only: the adapters (``GetManagedObjects`` on ``/``, ``org.bluez.Adapter1`` with an ``Address``) and
the registration of its HFP-AG and HSP-AG profiles (``ProfileManager1.RegisterProfile`` at ``/org/bluez``).
This module answers those on a private system bus and remembers where each profile is served, so that a
test can hand bluealsa a headset's RFCOMM link as BlueZ would (``Profile1.NewConnection``). Anything else
bluealsa tries (its battery provider) gets BlueZ's "unknown method" and bluealsa carries on without it.

Run as ``python -m tests.hfp.fake_bluez_ag`` (with ``DBUS_SYSTEM_BUS_ADDRESS`` set) it serves until killed
and prints each registration, to explore bluealsa by hand; the tests host it in-process (tests/hfp/bluealsa_rig.py).
"""

# No "from __future__ import annotations" here: dbus-fast reads D-Bus signatures from the annotations.
import asyncio
import os
from dataclasses import dataclass

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property

HFP_AG_UUID = "0000111f-0000-1000-8000-00805f9b34fb"
HSP_AG_UUID = "00001112-0000-1000-8000-00805f9b34fb"
ADAPTER = "hci0"
ADAPTER_ADDRESS = "00:1A:7D:DA:71:00"  # the phone's own radio, as the adapter reports it
PROFILE_MANAGER = "org.bluez.ProfileManager1"


@dataclass(frozen=True)
class Profile:
    """A profile registered with BlueZ: who serves it, and at which object."""

    owner: str  # the unique bus name of the process that registered it
    path: str


class _Adapter(ServiceInterface):
    """``org.bluez.Adapter1``: the properties bluealsa reads (it only needs ``Address``)."""

    def __init__(self) -> None:
        super().__init__("org.bluez.Adapter1")

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> "s":  # noqa: F821
        return ADAPTER_ADDRESS

    @dbus_property(access=PropertyAccess.READ)
    def Powered(self) -> "b":  # noqa: F821
        return True

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> "s":  # noqa: F821
        return "phone"


class FakeBluez:
    """``org.bluez`` on a bus: the adapter, and a ProfileManager1 that records registrations by UUID.

    ProfileManager1 is served from a message handler rather than a ServiceInterface because BlueZ keys a
    registration to the caller, and only the raw message says who called.
    """

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.profiles: dict[str, Profile] = {}
        self.changed = asyncio.Event()  # set at each registration change; the waiter clears it

    @classmethod
    async def serve(cls, bus_address: str) -> "FakeBluez":
        """Own ``org.bluez`` on the bus at ``bus_address`` (the connection passes file descriptors: BlueZ
        hands the RFCOMM sockets over it)."""
        bus = await MessageBus(bus_address=bus_address, bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()
        fake = cls(bus)
        bus.export(f"/org/bluez/{ADAPTER}", _Adapter())
        bus.add_message_handler(fake._on_message)
        await bus.request_name("org.bluez")
        return fake

    def forget(self) -> None:
        """Drop every profile, as BlueZ does when the process that registered them leaves the bus."""
        self.profiles.clear()
        self.changed.set()

    async def wait_profiles(self, *uuids: str, timeout: float = 5.0) -> dict[str, Profile]:
        """Wait until every one of ``uuids`` is registered."""
        async with asyncio.timeout(timeout):
            while not all(uuid in self.profiles for uuid in uuids):
                self.changed.clear()
                await self.changed.wait()
        return dict(self.profiles)

    def close(self) -> None:
        self.bus.disconnect()

    def _on_message(self, msg: Message) -> Message | None:
        if msg.message_type is not MessageType.METHOD_CALL or msg.interface != PROFILE_MANAGER:
            return None
        if msg.path != "/org/bluez":
            return Message.new_error(msg, "org.freedesktop.DBus.Error.UnknownObject", msg.path or "")
        if msg.member == "RegisterProfile" and msg.signature == "osa{sv}":
            path, uuid, _options = msg.body
            self.profiles[uuid.lower()] = Profile(msg.sender or "", path)
            self.changed.set()
            return Message.new_method_return(msg)
        if msg.member == "UnregisterProfile" and msg.signature == "o":
            for uuid, profile in list(self.profiles.items()):
                if profile.path == msg.body[0]:
                    del self.profiles[uuid]
            self.changed.set()
            return Message.new_method_return(msg)
        return Message.new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", msg.member or "")


async def _main() -> None:
    fake = await FakeBluez.serve(os.environ["DBUS_SYSTEM_BUS_ADDRESS"])
    print(f"org.bluez served: {ADAPTER} {ADAPTER_ADDRESS}", flush=True)
    while True:
        await fake.changed.wait()
        fake.changed.clear()
        print(f"profiles: {fake.profiles}", flush=True)


if __name__ == "__main__":
    asyncio.run(_main())
