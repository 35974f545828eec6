"""The AG call dialogue against a headset played in the test: exact frames, a fake clock, no sockets."""

from __future__ import annotations

import logging

import pytest

from softphone_hfp.dialogue import MAX_LINE, AgDialogue, HeadsetButton, Transport, VolumeKind
from tests.inputs.fakeclock import FakeClock

OK, ERROR, RING = b"\r\nOK\r\n", b"\r\nERROR\r\n", b"\r\nRING\r\n"


def f(line: str) -> bytes:
    return b"\r\n" + line.encode() + b"\r\n"


class Headset:
    """The headset's end of the RFCOMM channel, and a phone that does what the buttons ask.

    ``phone_acts``: the phone answers/hangs up synchronously inside ``on_button`` and tells the dialogue, as
    the plugin will when the phone's hooks run at once; otherwise the test tells the dialogue itself.
    """

    def __init__(
        self, transport: Transport = Transport.HFP, *, phone_acts: bool = True, refuse: bool = False
    ) -> None:
        self.clock = FakeClock()
        self.wire: list[bytes] = []
        self.buttons: list[HeadsetButton] = []
        self.volumes: list[tuple[VolumeKind, int]] = []
        self.dialled: list[str] = []
        self.phone_acts, self.refuse = phone_acts, refuse
        self.ag = AgDialogue(
            transport,
            self.wire.append,
            self._button,
            schedule=self.clock.schedule,
            on_volume=lambda kind, level: self.volumes.append((kind, level)),
            on_dial=self.dialled.append,
        )

    def _button(self, button: HeadsetButton) -> bool | None:
        self.buttons.append(button)
        if self.refuse:
            return False
        if self.phone_acts:
            ringing = self.ag.phase == "ringing"
            if button is HeadsetButton.ANSWER or (button is HeadsetButton.HSP_BUTTON and ringing):
                self.ag.answered()
            elif button is HeadsetButton.HANGUP or button is HeadsetButton.HSP_BUTTON:
                self.ag.ended()
        return None

    def says(self, command: str | bytes) -> list[bytes]:
        """Send one command as bluealsa forwards it; what the AG wrote back."""
        self.wire.clear()
        self.ag.received(command if isinstance(command, bytes) else command.encode() + b"\r")
        return self.take()

    def take(self) -> list[bytes]:
        out, self.wire[:] = list(self.wire), []
        return out


@pytest.fixture
def hs() -> Headset:
    h = Headset()
    h.ag.slc_ready()
    assert h.take() == [f("+CIEV: 1,1")]
    return h


def test_incoming_call_answered_and_hung_up_from_the_headset(hs: Headset) -> None:
    assert hs.says("AT+CLIP=1") == [OK]
    hs.ag.incoming("1003")
    assert hs.take() == [f("+CIEV: 3,1"), RING, f('+CLIP: "1003",129')]
    assert hs.says("AT+CLCC") == [f('+CLCC: 1,1,4,0,0,"1003",129'), OK]
    # OK first, then the indicators the answer caused (the phone told the dialogue inside on_button)
    assert hs.says("ATA") == [OK, f("+CIEV: 2,1"), f("+CIEV: 3,0")]
    assert hs.says("AT+CLCC") == [f('+CLCC: 1,1,0,0,0,"1003",129'), OK]
    assert hs.says("AT+CHUP") == [OK, f("+CIEV: 2,0")]
    assert hs.buttons == [HeadsetButton.ANSWER, HeadsetButton.HANGUP]
    assert hs.says("AT+CLCC") == [OK]
    assert hs.clock.pending() == 0


def test_ring_without_clip_until_asked_and_international_numbers(hs: Headset) -> None:
    hs.ag.incoming("+4930123")
    assert hs.take() == [f("+CIEV: 3,1"), RING]
    assert hs.says("AT+CLIP=1") == [OK]
    hs.clock.advance(1.0)
    assert hs.take() == [RING, f('+CLIP: "+4930123",145')]


def test_answer_reported_later_by_the_phone() -> None:
    hs = Headset(phone_acts=False)
    hs.ag.slc_ready()
    hs.ag.incoming(None)
    assert hs.take() == [f("+CIEV: 1,1"), f("+CIEV: 3,1"), RING]
    assert hs.says("ATA") == [OK]
    hs.ag.answered()
    assert hs.take() == [f("+CIEV: 2,1"), f("+CIEV: 3,0")]


def test_rejecting_while_ringing(hs: Headset) -> None:
    hs.ag.incoming("1003")
    hs.take()
    assert hs.says("AT+CHUP") == [OK, f("+CIEV: 3,0")]
    assert hs.buttons == [HeadsetButton.HANGUP]
    hs.clock.advance(5)
    assert hs.take() == []


def test_far_end_hangs_up_ringing_and_in_a_call(hs: Headset) -> None:
    hs.ag.incoming("1003")
    hs.ag.ended()  # the caller gave up, or the call was answered elsewhere
    assert hs.take() == [f("+CIEV: 3,1"), RING, f("+CIEV: 3,0")]
    hs.ag.incoming("1003")
    hs.ag.answered()  # answered elsewhere (CLI, GPIO)
    hs.take()
    hs.ag.ended()
    assert hs.take() == [f("+CIEV: 2,0")]
    hs.ag.ended()  # twice: nothing more
    assert hs.take() == []
    assert hs.says("AT+CHUP") == [ERROR]


def test_ring_repeats_every_second_and_stops_on_answer(hs: Headset) -> None:
    hs.ag.incoming("1003")
    hs.take()
    hs.clock.advance(0.99)
    assert hs.take() == []
    hs.clock.advance(0.01)
    assert hs.take() == [RING]
    hs.clock.advance(2.0)
    assert hs.take() == [RING, RING]
    hs.ag.answered()
    assert hs.take() == [f("+CIEV: 2,1"), f("+CIEV: 3,0")]
    hs.clock.advance(10)
    assert hs.take() == []
    assert hs.clock.pending() == 0


def test_ring_stops_on_end_and_on_close(hs: Headset) -> None:
    hs.ag.incoming("1003")
    hs.ag.ended()
    hs.take()
    hs.clock.advance(3)
    assert hs.take() == [] and hs.clock.pending() == 0
    hs.ag.incoming("1003")
    hs.take()
    hs.ag.close()
    hs.ag.close()
    hs.clock.advance(3)
    assert hs.take() == [] and hs.clock.pending() == 0
    assert hs.says("ATA") == []


def test_outgoing_call_indicators_and_clcc(hs: Headset) -> None:
    hs.ag.dialing("1004")
    hs.ag.alerting()
    assert hs.take() == [f("+CIEV: 3,2"), f("+CIEV: 3,3")]
    assert hs.says("AT+CLCC") == [f('+CLCC: 1,0,3,0,0,"1004",129'), OK]
    hs.ag.answered()
    assert hs.take() == [f("+CIEV: 2,1"), f("+CIEV: 3,0")]
    hs.ag.ended()
    assert hs.take() == [f("+CIEV: 2,0")]
    hs.ag.dialing()
    assert hs.take() == [f("+CIEV: 3,2")]
    assert hs.says("AT+CLCC") == [f("+CLCC: 1,0,2,0,0"), OK]
    assert hs.says("AT+CHUP") == [OK, f("+CIEV: 3,0")]  # cancelled from the headset


def test_redial_voice_dial_and_atd(hs: Headset) -> None:
    assert hs.says("AT+BLDN") == [OK]
    assert hs.says("AT+BVRA=1") == [OK]
    assert hs.says("AT+BVRA=0") == [OK]
    assert hs.buttons == [HeadsetButton.REDIAL, HeadsetButton.VOICE_DIAL]
    assert hs.says("ATD1003;") == [OK]
    assert hs.dialled == ["1003"]
    hs.ag.incoming("1003")
    hs.take()
    assert hs.says("ATD1005;") == [ERROR]  # not while a call is set up
    assert hs.dialled == ["1003"]


def test_a_command_the_phone_refuses_gets_error() -> None:
    hs = Headset(refuse=True)
    hs.ag.slc_ready()
    hs.ag.incoming("1003")
    hs.take()
    assert hs.says("ATA") == [ERROR]
    assert hs.says("AT+BLDN") == [ERROR]


def test_ata_while_idle_is_an_error(hs: Headset) -> None:
    assert hs.says("ATA") == [ERROR]
    assert hs.says("AT+CHUP") == [ERROR]
    assert hs.buttons == []


def test_accepted_settings(hs: Headset) -> None:
    for command in ("AT", "AT+CLIP=0", "AT+CCWA=1", "AT+CMEE=1", "AT+BTRH?", "AT+CNUM", "AT+COPS=3,0"):
        assert hs.says(command) == [OK], command
    assert hs.says("AT+COPS?") == [f("+COPS: 0"), OK]
    assert hs.says(b"at+clip=1\r") == [OK]  # AT commands are case-insensitive
    assert hs.ag.clip


@pytest.mark.parametrize(
    "copy",
    ["AT+BRSF=959", "AT+BAC=1,2", "AT+BCS=1", "AT+CIND=?", "AT+CIND?", "AT+CMER=3,0,0,1", "AT+BIA=0,0,0,1",
     "AT+VGS=12", "AT+VGM=8", "AT+XAPL=05AC-1234-0100,7", "AT+IPHONEACCEV=1,1,5", "AT+ANDROID=1", "AT+NREC=0",
     "AT+BCC"],
)  # fmt: skip
def test_copies_of_what_bluealsa_answered_get_no_reply(hs: Headset, copy: str) -> None:
    assert hs.says(copy) == []


def test_volume_copies_reach_on_volume(hs: Headset) -> None:
    assert hs.says("AT+VGS=12") == []
    assert hs.says("AT+VGM=8") == []
    assert hs.says("AT+VGS=99") == []  # out of range: bluealsa's business, not reported
    assert hs.volumes == [(VolumeKind.SPEAKER, 12), (VolumeKind.MICROPHONE, 8)]


def test_indicators_wait_for_the_slc_and_the_cmer_copy_completes_it() -> None:
    hs = Headset()
    hs.ag.incoming("1003")
    assert hs.take() == [RING]  # no +CIEV before indicator events are on
    assert hs.says("AT+CMER=3,0,0,1") == [f("+CIEV: 1,1"), f("+CIEV: 3,1")]
    hs.ag.slc_ready()  # the plugin may say so too: once is enough
    assert hs.take() == []


def test_hsp_button_toggles_and_ring_has_no_indicators() -> None:
    hs = Headset(Transport.HSP)
    hs.ag.slc_ready()
    assert hs.says("AT+CLIP=1") == [ERROR]  # not an HSP command
    hs.ag.incoming("1003")
    assert hs.take() == [RING]
    hs.clock.advance(1)
    assert hs.take() == [RING]
    assert hs.says("AT+CKPD=200") == [OK]  # answers (the mapping's single press while ringing)
    assert hs.ag.phase == "active"
    hs.clock.advance(3)
    assert hs.take() == []
    assert hs.says("AT+CKPD=200") == [OK]  # hangs up
    assert hs.ag.phase == "idle"
    assert hs.buttons == [HeadsetButton.HSP_BUTTON, HeadsetButton.HSP_BUTTON]
    assert hs.says("AT+VGS=7") == []
    assert hs.volumes == [(VolumeKind.SPEAKER, 7)]
    assert hs.says("ATA") == [ERROR]


@pytest.mark.parametrize(
    "bad",
    [b"AT+FOO\r", b"AT+CHLD=?\r", b"AT+CLIP=2\r", b"ATA=1\r", b"HELLO\r", b"AT+CKPD=100\r", b"ATD>1;\r",
     b"AT\xff\r", b"AT+CLIP=1\x00\r"],
)  # fmt: skip
def test_unknown_and_malformed_get_error_logged_once(
    hs: Headset, bad: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "softphone_hfp"):
        assert hs.says(bad) == [ERROR]
        assert hs.says(bad) == [ERROR]
    assert len(caplog.records) == 1
    assert hs.buttons == []


def test_over_long_lines_are_refused_without_parsing(hs: Headset, caplog: pytest.LogCaptureFixture) -> None:
    hs.ag.incoming("1003")
    hs.take()
    with caplog.at_level(logging.WARNING, "softphone_hfp"):
        assert hs.says(b"ATA" + b" " * MAX_LINE + b"\r") == [ERROR]
        assert hs.says(b"AT+CLIP=1" + b"x" * 1000 + b"\r") == [ERROR]
    assert hs.buttons == [] and not hs.ag.clip
    assert [r.getMessage() for r in caplog.records] == [
        "hfp: the HFP-AG headset sent an over-long line (260 bytes): answered ERROR"
    ]


def test_a_flood_of_distinct_garbage_is_logged_a_bounded_number_of_times(
    hs: Headset, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "softphone_hfp"):
        for i in range(100):
            assert hs.says(f"AT+X{i}") == [ERROR]
    assert len(caplog.records) == 33
    assert "no more are logged" in caplog.records[-1].getMessage()
