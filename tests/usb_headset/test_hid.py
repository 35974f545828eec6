"""The HID descriptor parser and report codec against hand-built headset descriptors: exact bytes both ways."""

from __future__ import annotations

import random

import pytest

from softphone_usb_headset.hid import (
    Control,
    DescriptorError,
    InputReport,
    NotTelephonyError,
    OutputState,
    ReportKind,
    TelephonyHeadset,
    Usage,
    describe,
    parse_descriptor,
    usage,
)
from tests.usb_headset import descriptors as d

JABRA = TelephonyHeadset.from_descriptor(d.JABRA_LIKE)
LOGITECH = TelephonyHeadset.from_descriptor(d.LOGITECH_LIKE)
SIMPLE = TelephonyHeadset.from_descriptor(d.SIMPLE_UNNUMBERED)

RINGING = OutputState(ring=True)
ANSWERED = OutputState(off_hook=True)
HELD = OutputState(off_hook=True, hold=True)
MUTED = OutputState(off_hook=True, mute=True)
IDLE = OutputState()


def layout(headset: TelephonyHeadset, kind: ReportKind) -> list[tuple[str, int, int, int, str]]:
    """(name, report ID, bit offset, bit size, mode) of each input or output, in descriptor order."""
    controls = headset.inputs if kind is ReportKind.INPUT else headset.outputs
    return [(c.name, c.report_id, c.bit_offset, c.bit_size, mode(c)) for c in controls]


def mode(c: Control) -> str:
    return "array" if c.array else "relative" if c.relative else "absolute"


def on(report: InputReport) -> set[str]:
    """The controls a report shows pressed or set."""
    assert report.ignored is None, report.ignored
    return {name for name, value in report.values.items() if value}


def tel(usage_id: int) -> bytes:
    """The opening of a top-level collection on the Telephony page (0x05: Headset)."""
    return bytes([0x05, 0x0B, 0x09, usage_id, 0xA1, 0x01])


# --- Jabra-like: numbered reports, absolute hook, LEDs in a report of their own


def test_jabra_like_descriptor_has_three_collections_and_numbers_its_reports() -> None:
    desc = parse_descriptor(d.JABRA_LIKE)
    assert desc.numbered
    names = ["Consumer Control", "Telephony Headset", "vendor 0xff30:0x01"]
    assert [a.name for a in desc.applications] == names
    assert [desc.report_ids(i) for i in range(3)] == [{1}, {2, 3}, {5}]
    assert desc.report_length(ReportKind.INPUT, 1) == 1
    assert desc.report_length(ReportKind.INPUT, 2) == 2
    assert desc.report_length(ReportKind.OUTPUT, 3) == 1
    assert desc.report_length(ReportKind.FEATURE, 5) == 2
    assert desc.report_length(ReportKind.INPUT, 3) is None
    assert JABRA.report_ids == {2, 3}
    assert JABRA.name == "Telephony Headset"


def test_jabra_like_controls() -> None:
    keys = [f"key_{digit}" for digit in range(10)] + ["key_star", "key_pound"]
    assert layout(JABRA, ReportKind.INPUT) == [
        ("hook_switch", 2, 0, 1, "absolute"),
        ("line_busy_tone", 2, 1, 1, "absolute"),
        ("phone_mute", 2, 2, 1, "relative"),
        ("flash", 2, 3, 1, "absolute"),
        ("redial", 2, 4, 1, "relative"),
        *[(key, 2, 8, 4, "array") for key in keys],
    ]
    assert layout(JABRA, ReportKind.OUTPUT) == [
        ("off_hook", 3, 0, 1, "absolute"),
        ("ring", 3, 1, 1, "absolute"),
        ("mute", 3, 2, 1, "absolute"),
        ("hold", 3, 3, 1, "absolute"),
    ]
    hook = JABRA.control("hook_switch")
    assert hook is not None and hook.usage == Usage.HOOK_SWITCH == 0x000B0020 and hook.absolute
    assert JABRA.control("volume_up") is None  # the Consumer collection's: not the phone's


def test_jabra_like_hook_mute_flash_and_redial_decoded() -> None:
    assert on(JABRA.decode(b"\x02\x01\x00")) == {"hook_switch"}  # boom down: off hook
    assert on(JABRA.decode(b"\x02\x05\x00")) == {"hook_switch", "phone_mute"}  # mute pressed in the call
    assert on(JABRA.decode(b"\x02\x01\x00")) == {"hook_switch"}  # mute released
    assert on(JABRA.decode(b"\x02\x09\x00")) == {"hook_switch", "flash"}
    assert on(JABRA.decode(b"\x02\x00\x00")) == set()  # boom up: on hook
    assert JABRA.decode(b"\x02\x00\x00").values["hook_switch"] == 0
    assert on(JABRA.decode(b"\x02\x10\x00")) == {"redial"}
    assert on(JABRA.decode(b"\x02\x03\x00")) == {"hook_switch", "line_busy_tone"}


def test_jabra_like_keypad_array() -> None:
    assert on(JABRA.decode(b"\x02\x00\x01")) == {"key_0"}  # logical 1 is the first usage
    assert on(JABRA.decode(b"\x02\x00\x06")) == {"key_5"}
    assert on(JABRA.decode(b"\x02\x00\x0c")) == {"key_pound"}
    assert on(JABRA.decode(b"\x02\x00\x00")) == set()  # 0: the null value, no key
    assert on(JABRA.decode(b"\x02\x00\x0d")) == set()  # past Logical Maximum: nothing
    assert on(JABRA.decode(b"\x02\xe0\xf0")) == set()  # padding bits are never read


def test_jabra_like_other_unknown_short_and_oversized_reports() -> None:
    volume = JABRA.decode(b"\x01\x02")  # the volume keys' report: known, no call control in it
    assert volume == InputReport(1, {}, None, 0)
    assert JABRA.decode(b"\x09\x00") == InputReport(9, {}, "the descriptor declares no input report 9")
    assert JABRA.decode(b"\x02\x01") == InputReport(2, {}, "report 2 has 1 byte, its descriptor says 2")
    assert JABRA.decode(b"\x02") == InputReport(2, {}, "report 2 has 0 bytes, its descriptor says 2")
    feature = JABRA.decode(b"\x05\x00\x00")  # report 5 is a feature and an output report, never an input
    assert feature == InputReport(5, {}, "the descriptor declares no input report 5")
    assert JABRA.decode(b"") == InputReport(0, {}, "an empty read")
    padded = JABRA.decode(b"\x02\x01\x00" + bytes(61))  # a device that pads every report to 64 bytes
    assert on(padded) == {"hook_switch"} and padded.extra_bytes == 61
    assert on(JABRA.decode(bytearray(b"\x02\x01\x00"))) == {"hook_switch"}


@pytest.mark.parametrize(
    ("state", "reports"),
    [
        (RINGING, {3: b"\x03\x02"}),
        (ANSWERED, {3: b"\x03\x01"}),
        (HELD, {3: b"\x03\x09"}),  # Off-Hook stays on: clearing it ends the call on some Jabras
        (MUTED, {3: b"\x03\x05"}),
        (IDLE, {3: b"\x03\x00"}),
    ],
)
def test_jabra_like_output_reports(state: OutputState, reports: dict[int, bytes]) -> None:
    assert JABRA.output_reports(state) == reports  # never the vendor report 5


def test_output_reports_from_usages() -> None:
    assert JABRA.output_reports({Usage.LED_OFF_HOOK: True, Usage.LED_RING: 1}) == {3: b"\x03\x03"}
    # the vendor collection's output report is not the headset's telephony side: never built, even when asked
    vendor = usage(0xFF30, 0x03)
    assert parse_descriptor(d.JABRA_LIKE).fields_of(ReportKind.OUTPUT, 5)[0].usages == (vendor,)
    assert JABRA.output_reports({vendor: 0x7F}) == {3: b"\x03\x00"}
    # a vendor usage inside the telephony collection is written when asked for, next to the LEDs
    assert LOGITECH.output_reports({usage(0xFF43, 0x01): 0x7F, Usage.LED_MUTE: 1}) == {8: b"\x08\x02\x7f"}


# --- Logitech-like: momentary (relative) hook, Telephony Ringer, one report ID both ways


def test_logitech_like_controls() -> None:
    assert layout(LOGITECH, ReportKind.INPUT) == [
        ("hook_switch", 8, 0, 1, "relative"),
        ("phone_mute", 8, 1, 1, "relative"),
        ("button_1", 8, 2, 1, "relative"),
    ]
    assert layout(LOGITECH, ReportKind.OUTPUT) == [
        ("off_hook", 8, 0, 1, "absolute"),
        ("mute", 8, 1, 1, "absolute"),
        ("ringer", 8, 2, 1, "absolute"),  # the extended usage 0x000B009E among LED-page usages
        ("0xff43:0x01", 8, 8, 8, "absolute"),
    ]
    ringer = LOGITECH.control("ringer")
    assert ringer is not None and ringer.usage == Usage.RINGER


def test_logitech_like_hook_press_is_a_toggle() -> None:
    assert on(LOGITECH.decode(b"\x08\x01")) == {"hook_switch"}  # pressed: answer (or hang up)
    assert on(LOGITECH.decode(b"\x08\x00")) == set()  # released: nothing happens
    assert on(LOGITECH.decode(b"\x08\x02")) == {"phone_mute"}
    assert on(LOGITECH.decode(b"\x08\x04")) == {"button_1"}
    assert LOGITECH.decode(b"\x08").ignored == "report 8 has 0 bytes, its descriptor says 1"


@pytest.mark.parametrize(
    ("state", "reports"),
    [
        (RINGING, {8: b"\x08\x04\x00"}),  # the Ringer: this headset has no Ring LED
        (ANSWERED, {8: b"\x08\x01\x00"}),
        (HELD, {8: b"\x08\x01\x00"}),  # no Hold LED: Off-Hook alone
        (MUTED, {8: b"\x08\x03\x00"}),
        (IDLE, {8: b"\x08\x00\x00"}),  # the vendor byte in the same report is written 0 too
    ],
)
def test_logitech_like_output_reports(state: OutputState, reports: dict[int, bytes]) -> None:
    assert LOGITECH.output_reports(state) == reports


# --- unnumbered: no ID byte read, a 0 byte before every write


def test_unnumbered_controls_and_reports() -> None:
    assert not SIMPLE.numbered
    assert layout(SIMPLE, ReportKind.INPUT) == [
        ("hook_switch", 0, 0, 1, "absolute"),
        ("phone_mute", 0, 1, 1, "relative"),
    ]
    assert [c.name for c in SIMPLE.outputs] == ["off_hook", "ring", "mute", "microphone"]
    assert on(SIMPLE.decode(b"\x01")) == {"hook_switch"}
    assert on(SIMPLE.decode(b"\x03")) == {"hook_switch", "phone_mute"}
    assert on(SIMPLE.decode(b"\x00")) == set()
    padded = SIMPLE.decode(b"\x01" + bytes(7))
    assert padded.report_id == 0 and on(padded) == {"hook_switch"} and padded.extra_bytes == 7


@pytest.mark.parametrize(
    ("state", "reports"),
    [
        (RINGING, {0: b"\x00\x02"}),  # hidraw's write() wants the report number first, 0 when unnumbered
        (ANSWERED, {0: b"\x00\x01"}),
        (HELD, {0: b"\x00\x01"}),
        (MUTED, {0: b"\x00\x0d"}),  # Off-Hook, Mute and Microphone
        (IDLE, {0: b"\x00\x00"}),
    ],
)
def test_unnumbered_output_reports(state: OutputState, reports: dict[int, bytes]) -> None:
    assert SIMPLE.output_reports(state) == reports


# --- devices the plugin cannot use, and descriptors that are not


def test_poly_vendor_page_is_not_a_telephony_headset() -> None:
    with pytest.raises(NotTelephonyError) as caught:
        TelephonyHeadset.from_descriptor(d.POLY_VENDOR)
    assert caught.value.reason.startswith("no top-level Phone, Handset or Headset collection on the Telephony")
    assert "Consumer Control (report 1), vendor 0xffa0:0x01 (report 3)" in caught.value.reason
    assert "older Poly/Plantronics" in caught.value.reason
    assert describe(d.POLY_VENDOR).startswith("not a telephony headset: no top-level Phone, Handset or Headset")


def test_telephony_page_without_a_phone_or_without_controls() -> None:
    keypad_only = tel(0x06) + bytes([0x15, 0x00, 0x25, 0x01, 0x75, 0x01, 0x95, 0x01, 0x09, 0xB0, 0x81, 0x02,
                                     0xC0])  # fmt: skip
    with pytest.raises(NotTelephonyError, match=r"\(0x0B\); it has collection 0x0b:0x06$"):
        TelephonyHeadset.from_descriptor(keypad_only)
    padding_only = tel(0x05) + bytes([0x75, 0x08, 0x95, 0x01, 0x81, 0x01, 0xC0])
    with pytest.raises(NotTelephonyError, match="its Telephony Headset collection has no call button and no"):
        TelephonyHeadset.from_descriptor(padding_only)


@pytest.mark.parametrize(
    ("data", "offset", "problem"),
    [
        (d.TRUNCATED, d.TRUNCATED_AT, "item 0x26 wants 2 data bytes, 1 left: the descriptor is cut short"),
        (d.GARBAGE, 0, "main item tag 0x1 is not a HID 1.11 item"),
        (b"", 0, "the descriptor is empty"),
        (d.JABRA_LIKE[:-1], d.JABRA_LIKE.index(b"\x06\x30\xff") + 5, "this collection is never closed"),
        (b"\xc0", 0, "End Collection with no collection open"),
        (b"\x05\x0b\xb4", 2, "Pop with nothing pushed"),
        (b"\xa4" * 5, 4, "Push nested more than 4 deep"),
        (b"\x85\x00", 0, "Report ID 0 is not 1 to 255"),
        (b"\x75\x01\x96\x01\x40", 2, "Report Count 16385 is over 12288"),
        (b"\x76\x01\x01", 0, "Report Size 257 is over 256 bits"),
        (b"\x29\x05", 0, "Usage Maximum without a Usage Minimum"),
        (b"\x0c", 0, "item 0x0c has the reserved type 3"),
        (b"\xc4", 0, "global item tag 0xc is not a HID 1.11 item"),
        (b"\x00", 0, "main item tag 0x0 is not a HID 1.11 item"),
        (b"\x05\x0b\xfe\x04", 2, "a long item is cut short before its size and tag"),
        (b"\xfe\x04\x00\x01", 0, "a long item wants 4 data bytes, 1 left: the descriptor is cut short"),
        (b"\xa9\x01\xa9\x01", 2, "nested Delimiter"),
        (b"\xa9\x01", 2, "a Delimiter set is never closed"),
        (b"\x75\x08\x97\x00\x30\x00\x00\x81\x02\x81\x02", 9, "the input report grows over 16383 bytes"),
    ],
)
def test_bad_descriptors_name_the_byte(data: bytes, offset: int, problem: str) -> None:
    with pytest.raises(DescriptorError) as caught:
        parse_descriptor(data)
    assert (caught.value.offset, caught.value.problem) == (offset, problem)
    assert str(caught.value) == f"report descriptor, byte {offset}: {problem}"
    assert describe(data) == str(caught.value)


# --- HID 1.11 rules the parser follows, in small descriptors


def test_long_items_are_skipped() -> None:
    long_item = bytes([0xFE, 0x02, 0x10, 0xAA, 0xBB])
    with_long = TelephonyHeadset.from_descriptor(long_item + d.SIMPLE_UNNUMBERED)
    assert with_long.inputs == SIMPLE.inputs and with_long.outputs == SIMPLE.outputs


def test_a_usage_takes_the_page_in_effect_at_its_main_item() -> None:
    # Usage (0x17) before Usage Page (LED): HID 1.11 6.2.2.8 puts it on the LED page, Off-Hook
    late_page = tel(0x05) + bytes([0x09, 0x17, 0x05, 0x08, 0x15, 0x00, 0x25, 0x01, 0x75, 0x01, 0x95, 0x01,
                                   0x91, 0x02, 0x95, 0x07, 0x91, 0x01, 0xC0])  # fmt: skip
    assert [(c.name, c.usage) for c in TelephonyHeadset.from_descriptor(late_page).outputs] == [
        ("off_hook", Usage.LED_OFF_HOOK)
    ]
    # LED usages, then a page change for one Telephony usage: each keeps its own page (as Linux reads it)
    mixed = tel(0x05) + bytes([0x05, 0x08, 0x09, 0x17, 0x05, 0x0B, 0x09, 0x9E, 0x15, 0x00, 0x25, 0x01,
                               0x75, 0x01, 0x95, 0x02, 0x91, 0x02, 0x95, 0x06, 0x91, 0x01, 0xC0])  # fmt: skip
    headset = TelephonyHeadset.from_descriptor(mixed)
    assert [c.name for c in headset.outputs] == ["off_hook", "ringer"]
    assert headset.output_reports(RINGING) == {0: b"\x00\x02"}


def test_variable_elements_past_the_last_usage_repeat_it() -> None:
    two_bits = tel(0x05) + bytes([0x05, 0x08, 0x09, 0x17, 0x15, 0x00, 0x25, 0x01, 0x75, 0x01, 0x95, 0x02,
                                  0x91, 0x02, 0x95, 0x06, 0x91, 0x01, 0xC0])  # fmt: skip
    headset = TelephonyHeadset.from_descriptor(two_bits)
    assert [c.name for c in headset.outputs] == ["off_hook"]  # one control...
    assert headset.output_reports(ANSWERED) == {0: b"\x00\x03"}  # ...on both bits, as HID 1.11 says


def test_logical_limits_signed_only_when_the_minimum_is_negative() -> None:
    def limits(items: bytes) -> tuple[int, int]:
        f = parse_descriptor(items + bytes([0x75, 0x08, 0x95, 0x01, 0x09, 0x01, 0x81, 0x02])).fields[0]
        return f.logical_minimum, f.logical_maximum

    assert limits(bytes([0x15, 0x00, 0x25, 0xFF])) == (0, 255)  # how devices write 255
    assert limits(bytes([0x15, 0x81, 0x25, 0x7F])) == (-127, 127)
    assert limits(bytes([0x25, 0xFF, 0x15, 0x80])) == (-128, -1)  # the order of the two does not matter
    assert limits(bytes([0x16, 0x00, 0x80, 0x26, 0xFF, 0x7F])) == (-32768, 32767)


def test_signed_values_are_read_signed() -> None:
    vendor_level = tel(0x05) + bytes([0x06, 0x00, 0xFF, 0x09, 0x10, 0x15, 0x80, 0x25, 0x7F, 0x75, 0x08,
                                      0x95, 0x01, 0x81, 0x02, 0xC0])  # fmt: skip
    headset = TelephonyHeadset.from_descriptor(vendor_level)
    assert headset.decode(b"\xfe").values == {"0xff00:0x10": -2}
    assert headset.decode(b"\x05").values == {"0xff00:0x10": 5}


def test_extended_usage_ranges_and_delimiters() -> None:
    # Usage Minimum/Maximum as extended usages (page 0x0B while the Consumer page is in effect), then two
    # Delimiter sets naming one control: only the first set counts
    data = tel(0x05) + bytes([0x05, 0x0C,
                              0x1B, 0x20, 0x00, 0x0B, 0x00, 0x2B, 0x21, 0x00, 0x0B, 0x00,
                              0xA9, 0x01, 0x09, 0xE9, 0xA9, 0x00, 0xA9, 0x01, 0x09, 0xEA, 0xA9, 0x00,
                              0x15, 0x00, 0x25, 0x01, 0x75, 0x01, 0x95, 0x03, 0x81, 0x02,
                              0x95, 0x05, 0x81, 0x01, 0xC0])  # fmt: skip
    inputs = TelephonyHeadset.from_descriptor(data).inputs
    assert [c.name for c in inputs] == ["hook_switch", "flash", "volume_up"]
    every_key = b"\x05\x07\x19\x00\x2a\xff\xff\x75\x08\x95\x01\x81\x00"  # a keyboard's 65536 usages...
    assert len(parse_descriptor(every_key).fields[0].usages) == 12288  # ...clipped as Linux clips them
    cross = b"\x1b\x20\x00\x0b\x00\x2b\x21\x00\x0c\x00"
    with pytest.raises(DescriptorError, match="Usage Minimum and Maximum on different pages"):
        parse_descriptor(cross)


# --- the doctor's words


def test_describe() -> None:
    assert describe(d.JABRA_LIKE) == (
        "Telephony Headset: inputs hook_switch (absolute), line_busy_tone (absolute), phone_mute (relative), "
        "flash (absolute), redial (relative), key_0..key_pound (array) (report 2); "
        "outputs off_hook, ring, mute, hold (report 3)"
    )
    assert describe(d.LOGITECH_LIKE) == (
        "Telephony Headset: inputs hook_switch (relative), phone_mute (relative), button_1 (relative) "
        "(report 8); "
        "outputs off_hook, mute, ringer, 0xff43:0x01 (report 8)"
    )
    assert describe(d.SIMPLE_UNNUMBERED) == (
        "Telephony Headset: inputs hook_switch (absolute), phone_mute (relative); "
        "outputs off_hook, ring, mute, microphone"
    )
    assert parse_descriptor(d.JABRA_LIKE).summary() == (
        "Consumer Control (report 1), Telephony Headset (reports 2, 3), vendor 0xff30:0x01 (report 5)"
    )


# --- garbage in, DescriptorError out


def _fuzz_cases(rng: random.Random) -> list[bytes]:
    real = [d.JABRA_LIKE, d.LOGITECH_LIKE, d.SIMPLE_UNNUMBERED, d.POLY_VENDOR]
    cases = [rng.randbytes(rng.randrange(48)) for _ in range(1000)]
    cases += [r[:n] for r in real for n in range(len(r))]
    for _ in range(3000):
        mutated = bytearray(rng.choice(real))
        for _ in range(rng.randrange(1, 3)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        cases.append(bytes(mutated))
    return cases


def test_garbage_raises_nothing_but_descriptor_error() -> None:
    rng = random.Random(14)
    parsed = headsets = 0
    for data in _fuzz_cases(rng):
        try:
            descriptor = parse_descriptor(data)
        except DescriptorError as e:
            assert 0 <= e.offset <= len(data)
            continue
        parsed += 1
        assert describe(data)
        try:
            headset = TelephonyHeadset(descriptor)
        except NotTelephonyError:
            continue
        headsets += 1
        ids = [*headset.report_ids, 0, 255]
        for _ in range(5):
            decoded = headset.decode(bytes([rng.choice(ids)]) + rng.randbytes(rng.randrange(6)))
            assert (decoded.ignored is None) or not decoded.values
        for state in (RINGING, MUTED, IDLE):
            for report_id, report in headset.output_reports(state).items():
                length = descriptor.report_length(ReportKind.OUTPUT, report_id)
                assert report[0] == report_id and len(report) == 1 + (length or 0)
        assert headset.describe()
    assert parsed > 1000 and headsets > 700  # the fuzz reached the decoder and the encoder, not just the parser
