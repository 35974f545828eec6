"""The real bluealsa (bluez-alsa-utils 4.0.0) against headsets played by tests/hfp/bluealsa_rig.py.

These pin what the phone relies on from the daemon that lends it the users' headsets: the service-level
connection bluealsa runs itself, the ``org.bluealsa.RFCOMM1`` object of each connected headset, the one holder
that gets the commands bluealsa does not answer and speaks to the headset raw, and a daemon restart.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import pytest
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from tests.hfp.bluealsa_rig import HF_FEATURES, RFCOMM, Bluealsa

# what the holder is shown of an HFP headset's SLC
SLC = [f"AT+BRSF={HF_FEATURES}\r".encode(), b"AT+CIND=?\r", b"AT+CIND?\r", b"AT+CMER=3,0,0,1\r"]


class Holder:
    """The phone's side of a headset's link: the SEQPACKET socket ``Open()`` lends, one AT command a message."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock

    async def receive(self, timeout: float = 5.0) -> bytes:
        """The next message from bluealsa (``b""`` once bluealsa closed the link)."""
        return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 1024), timeout)

    def send(self, data: bytes) -> None:
        self.sock.send(data)

    def close(self) -> None:
        self.sock.close()


async def system_bus(rig: Bluealsa) -> MessageBus:
    return await MessageBus(bus_address=rig.bus_address, bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()


async def open_rfcomm(bus: MessageBus, path: str) -> Holder:
    """``org.bluealsa.RFCOMM1.Open()`` as the phone calls it; raise with bluealsa's error if it refuses."""
    call = Message(destination="org.bluealsa", path=path, interface=RFCOMM, member="Open")
    reply = await bus.call(call)
    if reply.message_type is MessageType.ERROR:
        raise RuntimeError(f"{reply.error_name}: {' '.join(map(str, reply.body))}")
    # dbus-fast hands the fd over in unix_fds (the body holds its index): this socket is its only owner
    assert reply.body == [0] and len(reply.unix_fds) == 1
    return Holder(socket.socket(fileno=reply.unix_fds[0]))


def wait_until(probe: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_hfp_headset_completes_the_slc_and_its_link_is_exported(bluealsa: Bluealsa) -> None:
    headset = bluealsa.connect()
    assert bluealsa.rfcomm_objects() == [headset.rfcomm_path]  # before the SLC already
    headset.slc()
    assert headset.rfcomm_path == "/org/bluealsa/hci0/dev_00_11_22_33_44_55/rfcomm"
    properties = bluealsa.rfcomm_properties(headset.rfcomm_path)
    assert properties["Transport"] == "HFP-AG"
    assert properties["Features"] == HF_FEATURES  # the headset's AT+BRSF


def test_hsp_headset_is_exported_as_hsp_ag(bluealsa: Bluealsa) -> None:
    headset = bluealsa.connect("00:11:22:33:44:66", transport="HSP")
    headset.slc()
    assert bluealsa.rfcomm_objects() == ["/org/bluealsa/hci0/dev_00_11_22_33_44_66/rfcomm"]
    assert bluealsa.rfcomm_properties(headset.rfcomm_path)["Transport"] == "HSP-AG"


def test_without_a_holder_bluealsa_refuses_the_call_commands(bluealsa: Bluealsa) -> None:
    headset = bluealsa.connect()
    headset.slc()
    headset.send("ATA")
    assert headset.expect("ERROR") == ["ERROR"]


def test_the_holder_gets_what_bluealsa_does_not_answer_and_speaks_to_the_headset(bluealsa: Bluealsa) -> None:
    async def scenario() -> None:
        bus = await system_bus(bluealsa)
        headset = await bluealsa.connect_async()
        await headset.slc_async()
        holder = await open_rfcomm(bus, headset.rfcomm_path)
        try:
            with pytest.raises(RuntimeError, match="busy"):
                await open_rfcomm(bus, headset.rfcomm_path)
            # What the holder writes reaches the headset as it is. bluealsa's RFCOMM thread takes the holder in
            # at its next turn: once this arrived, the headset's commands are shown to the holder.
            holder.send(b"\r\n+CIEV: 1,1\r\n")
            assert await headset.expect_async("+CIEV: 1,1") == ["+CIEV: 1,1"]

            headset.send("AT+VGS=12")  # bluealsa answers it, and shows the holder a copy
            assert await headset.expect_async("OK") == ["OK"]
            assert await holder.receive() == b"AT+VGS=12\r"

            headset.send("ATA")  # bluealsa does not answer it: forwarded, the holder's reply is the only one
            assert await holder.receive() == b"ATA\r"
            holder.send(b"\r\nOK\r\n")
            holder.send(b"\r\n+CIEV: 2,1\r\n")
            assert await headset.expect_async("+CIEV: 2,1") == ["OK", "+CIEV: 2,1"]
        finally:
            holder.close()
            bus.disconnect()

    asyncio.run(scenario())


def test_a_holder_may_open_the_link_before_the_slc(bluealsa: Bluealsa) -> None:
    async def scenario() -> None:
        bus = await system_bus(bluealsa)
        headset = await bluealsa.connect_async()
        holder = await open_rfcomm(bus, headset.rfcomm_path)
        try:
            await headset.slc_async()  # bluealsa still answers the SLC itself
            copies = [await holder.receive()]
            while copies[-1] != SLC[-1]:
                copies.append(await holder.receive())
            # bluealsa's RFCOMM thread takes the holder in at its next turn: a command that arrives as Open()
            # returns may be handled before that, unseen by the holder. Early copies may miss, never later ones.
            assert copies == SLC[-len(copies):]
        finally:
            holder.close()
            bus.disconnect()

    asyncio.run(scenario())


def test_a_headset_that_goes_away_takes_its_link_with_it(bluealsa: Bluealsa) -> None:
    async def scenario() -> None:
        bus = await system_bus(bluealsa)
        headset = await bluealsa.connect_async()
        await headset.slc_async()
        holder = await open_rfcomm(bus, headset.rfcomm_path)
        try:
            headset.close()
            assert await holder.receive() == b""  # the holder's socket ends with the link
            await asyncio.to_thread(wait_until, lambda: not bluealsa.rfcomm_objects(), "the rfcomm object to go")
        finally:
            holder.close()
            bus.disconnect()

    asyncio.run(scenario())


def test_bluealsa_killed_and_restarted_takes_new_headsets(bluealsa: Bluealsa) -> None:
    first = bluealsa.connect()
    first.slc()
    holder = bluealsa.open_rfcomm(first)
    holder.settimeout(5)
    bluealsa.kill()
    first.expect_link_lost()
    assert holder.recv(64) == b""  # the holder is told too
    bluealsa.restart()
    assert bluealsa.rfcomm_objects() == []  # a new daemon knows no headset
    second = bluealsa.connect("00:11:22:33:44:77")
    second.slc()
    assert bluealsa.rfcomm_objects() == [second.rfcomm_path]
