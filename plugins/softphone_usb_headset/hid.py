"""What a USB headset's call button and LEDs look like on the wire, read from its HID report descriptor.

A USB headset tells the host, in its report descriptor, where its hook switch, mute and flash buttons sit
in the reports it sends, and where the off-hook, ring, mute and hold LEDs sit in the reports it wants back.
This module reads that descriptor and turns the reports both ways: :func:`parse_descriptor` gives the
descriptor's fields, :class:`TelephonyHeadset` picks the telephony part of it (the top-level collection on
the Telephony page, 0x0B) and then decodes what the headset sends (:meth:`TelephonyHeadset.decode`) and
builds what it should show (:meth:`TelephonyHeadset.output_reports`, from an :class:`OutputState`).

Pure: no hidraw node, no ioctl, no clock. The bytes are those of ``read()`` and ``write()`` on the hidraw
node (docs.kernel.org/hid/hidraw.html): a read starts with the report ID when the device numbers its
reports, and a write always starts with the report ID, which is 0 when the device does not number them.

Sources: the HID 1.11 class definition (6.2.2, the report descriptor's items; 8, the reports), the HID
Usage Tables (Telephony 0x0B, LED 0x08, Consumer 0x0C, Button 0x09), and Linux's ``drivers/hid/hid-core.c``
where real descriptors and the spec part ways: the usage page a short Usage takes, a Logical Maximum read
unsigned when the minimum is not negative, and the limits beyond which Linux refuses a descriptor (a
device Linux refuses has no hidraw node, so nothing here needs to accept more).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby

# --- usages


def usage(page: int, usage_id: int) -> int:
    """A full 32-bit usage: the page in the high half, as HID's extended usages write it."""
    return page << 16 | usage_id


TELEPHONY_PAGE, LED_PAGE, BUTTON_PAGE, CONSUMER_PAGE = 0x0B, 0x08, 0x09, 0x0C


class Usage(enum.IntEnum):
    """The usages the phone acts on (HID Usage Tables)."""

    PHONE = usage(TELEPHONY_PAGE, 0x01)
    HANDSET = usage(TELEPHONY_PAGE, 0x04)
    HEADSET = usage(TELEPHONY_PAGE, 0x05)
    HOOK_SWITCH = usage(TELEPHONY_PAGE, 0x20)
    FLASH = usage(TELEPHONY_PAGE, 0x21)
    REDIAL = usage(TELEPHONY_PAGE, 0x24)
    PHONE_MUTE = usage(TELEPHONY_PAGE, 0x2F)
    RINGER = usage(TELEPHONY_PAGE, 0x9E)
    LED_MUTE = usage(LED_PAGE, 0x09)
    LED_OFF_HOOK = usage(LED_PAGE, 0x17)
    LED_RING = usage(LED_PAGE, 0x18)
    LED_HOLD = usage(LED_PAGE, 0x20)
    LED_MICROPHONE = usage(LED_PAGE, 0x21)
    CONSUMER_CONTROL = usage(CONSUMER_PAGE, 0x01)


#: Top-level collections that make a device a phone for this plugin.
TELEPHONY_APPLICATIONS = frozenset({Usage.PHONE, Usage.HANDSET, Usage.HEADSET})

_TELEPHONY_NAMES = {
    0x07: "programmable_button", 0x20: "hook_switch", 0x21: "flash", 0x22: "feature", 0x23: "hold",
    0x24: "redial", 0x25: "transfer", 0x26: "drop", 0x27: "park", 0x28: "forward_calls",
    0x29: "alternate_function", 0x2A: "line", 0x2B: "speaker_phone", 0x2C: "conference", 0x2D: "ring_enable",
    0x2E: "ring_select", 0x2F: "phone_mute", 0x30: "caller_id", 0x31: "send", 0x50: "speed_dial",
    0x51: "store_number", 0x52: "recall_number", 0x53: "phone_directory", 0x70: "voice_mail",
    0x71: "screen_calls", 0x72: "do_not_disturb", 0x73: "message", 0x74: "answer_on_off",
    0x97: "line_busy_tone", 0x9E: "ringer",
    **{0xB0 + digit: f"key_{digit}" for digit in range(10)},
    0xBA: "key_star", 0xBB: "key_pound", 0xBC: "key_a", 0xBD: "key_b", 0xBE: "key_c", 0xBF: "key_d",
}  # fmt: skip
_LED_NAMES = {
    0x08: "do_not_disturb", 0x09: "mute", 0x17: "off_hook", 0x18: "ring", 0x19: "message_waiting",
    0x1E: "speaker", 0x1F: "headset", 0x20: "hold", 0x21: "microphone", 0x24: "send_calls",
    0x25: "call_pickup", 0x26: "conference", 0x2A: "on_line", 0x2B: "off_line", 0x2C: "busy",
}  # fmt: skip
_CONSUMER_NAMES = {0xCD: "play_pause", 0xE2: "mute", 0xE9: "volume_up", 0xEA: "volume_down"}
_NAMES = {TELEPHONY_PAGE: _TELEPHONY_NAMES, LED_PAGE: _LED_NAMES, CONSUMER_PAGE: _CONSUMER_NAMES}
_COLLECTION_NAMES = {
    Usage.PHONE: "Telephony Phone", Usage.HANDSET: "Telephony Handset", Usage.HEADSET: "Telephony Headset",
    Usage.CONSUMER_CONTROL: "Consumer Control", usage(0x01, 0x02): "Mouse", usage(0x01, 0x06): "Keyboard",
    usage(0x01, 0x80): "System Control",
}  # fmt: skip
#: Older Poly/Plantronics headsets put their call button here instead of on the Telephony page.
POLY_VENDOR_PAGE = 0xFFA0


def usage_hex(value: int) -> str:
    """``0x0b:0x20``: a usage as the doctor prints one it has no name for."""
    return f"0x{value >> 16:02x}:0x{value & 0xFFFF:02x}"


def usage_name(value: int) -> str:
    """The name a control goes by (``hook_switch``, ``off_hook``, ``key_5``), or its :func:`usage_hex`."""
    page, usage_id = value >> 16, value & 0xFFFF
    if page == BUTTON_PAGE and usage_id:
        return f"button_{usage_id}"
    return _NAMES.get(page, {}).get(usage_id) or usage_hex(value)


def collection_name(value: int) -> str:
    """What a top-level collection makes of the device: ``Telephony Headset``, ``vendor 0xffa0:0x01``."""
    if value in _COLLECTION_NAMES:
        return _COLLECTION_NAMES[value]
    return f"{'vendor' if value >> 16 >= 0xFF00 else 'collection'} {usage_hex(value)}"


# --- the descriptor


class DescriptorError(ValueError):
    """The report descriptor is cut short or is not one: ``offset`` is the byte where reading stopped."""

    def __init__(self, offset: int, problem: str) -> None:
        super().__init__(f"report descriptor, byte {offset}: {problem}")
        self.offset = offset
        self.problem = problem


class NotTelephonyError(ValueError):
    """A well-formed descriptor with no phone in it: the device has no call controls this plugin can read."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"not a telephony headset: {reason}")
        self.reason = reason


class ReportKind(enum.StrEnum):
    INPUT = "input"  # the headset to the host: buttons
    OUTPUT = "output"  # the host to the headset: LEDs, ringer
    FEATURE = "feature"  # settings, both ways, on request


# Linux's limits (hid-core.c): a descriptor beyond them has no hidraw node, so none needs reading here.
MAX_REPORT_SIZE = 256  # bits in one element ("invalid report_size")
MAX_REPORT_COUNT = 12288  # elements in one item (HID_MAX_USAGES)
MAX_USAGES = 12288  # usages before one main item
MAX_REPORT_BYTES = 16384 - 1  # HID_MAX_BUFFER_SIZE, less the report ID
MAX_PUSH = 4  # HID_GLOBAL_STACK_SIZE
LONG_ITEM = 0xFE

_MAIN, _GLOBAL, _LOCAL = 0, 1, 2
_INPUT, _OUTPUT, _COLLECTION, _FEATURE, _END_COLLECTION = 0x8, 0x9, 0xA, 0xB, 0xC
_KINDS = {_INPUT: ReportKind.INPUT, _OUTPUT: ReportKind.OUTPUT, _FEATURE: ReportKind.FEATURE}


@dataclass(frozen=True)
class Field:
    """One Input, Output or Feature item: ``count`` elements of ``size`` bits from ``bit_offset`` of its report
    (bits counted from the least significant bit of the first byte after the report ID)."""

    kind: ReportKind
    report_id: int  # 0 when the device does not number its reports
    bit_offset: int
    size: int
    count: int
    flags: int  # the item's data: bit 0 constant, bit 1 variable, bit 2 relative
    usages: tuple[int, ...]
    logical_minimum: int
    logical_maximum: int
    application: int | None  # index in ReportDescriptor.applications; None outside any collection

    @property
    def constant(self) -> bool:
        """Padding or fixed data, no control."""
        return bool(self.flags & 0x01)

    @property
    def array(self) -> bool:
        """Each element holds an index into the usages (a keypad: the key pressed), not one control's value."""
        return not self.flags & 0x02

    @property
    def relative(self) -> bool:
        """A change (a toggle or one-shot press) rather than a state (a latching hook switch)."""
        return bool(self.flags & 0x04)


@dataclass(frozen=True)
class Application:
    """A top-level collection: one function of the device (a headset, volume keys, a vendor channel)."""

    usage: int
    offset: int  # of its Collection item

    @property
    def name(self) -> str:
        return collection_name(self.usage)


@dataclass(frozen=True)
class ReportDescriptor:
    """A parsed report descriptor: the device's top-level collections and every data item of its reports."""

    applications: tuple[Application, ...]
    fields: tuple[Field, ...]
    numbered: bool  # a Report ID item appears: every report starts with its ID
    report_bits: Mapping[tuple[ReportKind, int], int] = field(hash=False)  # every declared report's length

    def report_length(self, kind: ReportKind, report_id: int) -> int | None:
        """The report's length in bytes, without its ID; None when the descriptor declares no such report."""
        bits = self.report_bits.get((kind, report_id))
        return None if bits is None else (bits + 7) // 8

    def fields_of(self, kind: ReportKind, report_id: int) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.kind is kind and f.report_id == report_id)

    def report_ids(self, application: int) -> frozenset[int]:
        """The report IDs the fields of one top-level collection travel in (inputs, outputs and features)."""
        return frozenset(f.report_id for f in self.fields if f.application == application)

    def summary(self) -> str:
        """``Consumer Control (report 1), Telephony Headset (reports 2, 3)``: each top-level collection."""
        parts = []
        for index, app in enumerate(self.applications):
            ids = sorted(self.report_ids(index))
            if self.numbered and ids:
                parts.append(f"{app.name} (report{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))})")
            else:
                parts.append(app.name)
        return ", ".join(parts) or "no top-level collection"


@dataclass(frozen=True)
class _Item:
    offset: int
    type: int  # 0 main, 1 global, 2 local, 3 reserved
    tag: int
    size: int  # data bytes: 0, 1, 2 or 4
    data: int  # unsigned, little-endian

    @property
    def signed(self) -> int:
        return _signed(self.data, self.size * 8)


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if bits and value >> (bits - 1) & 1 else value


def _items(data: bytes) -> Iterator[_Item]:
    """The descriptor's short items in order; long items (HID 1.11 6.2.2.3, none defined) are skipped."""
    pos = 0
    while pos < len(data):
        prefix = data[pos]
        long = prefix == LONG_ITEM
        if long and pos + 3 > len(data):
            raise DescriptorError(pos, "a long item is cut short before its size and tag")
        start = pos + 3 if long else pos + 1
        size = data[pos + 1] if long else (0, 1, 2, 4)[prefix & 0x03]
        if start + size > len(data):
            what = "a long item" if long else f"item 0x{prefix:02x}"
            problem = f"{what} wants {size} data bytes, {len(data) - start} left: the descriptor is cut short"
            raise DescriptorError(pos, problem)
        if not long:
            value = int.from_bytes(data[start : start + size], "little")
            yield _Item(pos, prefix >> 2 & 0x03, prefix >> 4, size, value)
        pos = start + size


@dataclass(frozen=True)
class _Globals:
    """The global items in effect (HID 1.11 6.2.2.7); Push and Pop save and restore all of them."""

    usage_page: int = 0
    logical_minimum: int = 0
    logical_maximum: int = 0  # as read, unsigned; see logical_max
    logical_maximum_bits: int = 0
    report_size: int = 0
    report_count: int = 0
    report_id: int = 0

    @property
    def logical_max(self) -> int:
        """Signed only when the minimum is negative: devices write 255 as ``0x25, 0xFF`` (Linux reads it so)."""
        if self.logical_minimum < 0:
            return _signed(self.logical_maximum, self.logical_maximum_bits)
        return self.logical_maximum


class _Locals:
    """The local items since the last main item (HID 1.11 6.2.2.8)."""

    def __init__(self) -> None:
        self.usages: list[int] = []  # full usages, with the page in effect when each was declared
        self.extended: list[bool] = []  # declared with 4 bytes: its page is its own
        self.minimum: tuple[int, bool] | None = None  # Usage Minimum awaiting its Maximum
        self.delimiter_depth = 0
        self.delimiter_branch = 0

    def add(self, offset: int, value: int, extended: bool) -> None:
        if len(self.usages) >= MAX_USAGES:
            raise DescriptorError(offset, f"more than {MAX_USAGES} usages for one item")
        self.usages.append(value)
        self.extended.append(extended)

    def complete(self, page: int) -> tuple[int, ...]:
        """The usages as the main item sees them.

        HID 1.11 puts a short Usage on the page in effect at the main item; descriptors also change the page
        between usages of one item. As Linux does (``hid_concatenate_last_usage_page``): usages declared
        before the last Usage Page item take that page, back to the first one already on it.
        """
        usages = list(self.usages)
        for i in reversed(range(len(usages))):
            if self.extended[i]:
                continue
            if usages[i] >> 16 == page:
                break
            usages[i] = usage(page, usages[i] & 0xFFFF)
        return tuple(usages)


class _Parser:
    def __init__(self) -> None:
        self.globals = _Globals()
        self.pushed: list[_Globals] = []
        self.locals = _Locals()
        self.open: list[tuple[int, int]] = []  # open collections: (offset, index of their application)
        self.applications: list[Application] = []
        self.fields: list[Field] = []
        self.bits: dict[tuple[ReportKind, int], int] = {}
        self.numbered = False

    def parse(self, data: bytes) -> ReportDescriptor:
        if not data:
            raise DescriptorError(0, "the descriptor is empty")
        for item in _items(data):
            if item.type == _MAIN:
                self.main(item)
            elif item.type == _GLOBAL:
                self.global_(item)
            elif item.type == _LOCAL:
                self.local(item)
            else:
                raise DescriptorError(item.offset, f"item 0x{data[item.offset]:02x} has the reserved type 3")
        if self.open:
            raise DescriptorError(self.open[-1][0], "this collection is never closed")
        if self.locals.delimiter_depth:
            raise DescriptorError(len(data), "a Delimiter set is never closed")
        return ReportDescriptor(tuple(self.applications), tuple(self.fields), self.numbered, dict(self.bits))

    def main(self, item: _Item) -> None:
        usages = self.locals.complete(self.globals.usage_page)
        self.locals = _Locals()
        if item.tag == _COLLECTION:
            if not self.open:
                self.applications.append(Application(usages[0] if usages else 0, item.offset))
            self.open.append((item.offset, self.open[-1][1] if self.open else len(self.applications) - 1))
        elif item.tag == _END_COLLECTION:
            if not self.open:
                raise DescriptorError(item.offset, "End Collection with no collection open")
            self.open.pop()
        elif item.tag in _KINDS:
            self.add_field(item, _KINDS[item.tag], usages)
        else:
            raise DescriptorError(item.offset, f"main item tag 0x{item.tag:x} is not a HID 1.11 item")

    def add_field(self, item: _Item, kind: ReportKind, usages: tuple[int, ...]) -> None:
        g = self.globals
        start = self.bits.get((kind, g.report_id), 0)
        end = start + g.report_size * g.report_count
        if end > MAX_REPORT_BYTES * 8:
            report = f"{kind} report {g.report_id}" if g.report_id else f"the {kind} report"
            problem = f"{report} grows over {MAX_REPORT_BYTES} bytes"
            raise DescriptorError(item.offset, problem)
        self.bits[(kind, g.report_id)] = end
        if end > start:
            application = self.open[-1][1] if self.open else None
            self.fields.append(
                Field(kind, g.report_id, start, g.report_size, g.report_count, item.data, usages,
                      g.logical_minimum, g.logical_max, application)
            )  # fmt: skip

    def global_(self, item: _Item) -> None:
        g, tag, data = self.globals, item.tag, item.data
        if tag == 0x0:
            if data > 0xFFFF:
                raise DescriptorError(item.offset, f"Usage Page 0x{data:x} does not fit 16 bits")
            self.globals = replace(g, usage_page=data)
        elif tag == 0x1:
            self.globals = replace(g, logical_minimum=item.signed)
        elif tag == 0x2:
            self.globals = replace(g, logical_maximum=data, logical_maximum_bits=item.size * 8)
        elif tag in (0x3, 0x4, 0x5, 0x6):
            pass  # Physical Minimum/Maximum, Unit Exponent, Unit: nothing a call control needs
        elif tag == 0x7:
            if data > MAX_REPORT_SIZE:
                raise DescriptorError(item.offset, f"Report Size {data} is over {MAX_REPORT_SIZE} bits")
            self.globals = replace(g, report_size=data)
        elif tag == 0x8:
            if not 1 <= data <= 255:
                raise DescriptorError(item.offset, f"Report ID {data} is not 1 to 255")
            self.globals = replace(g, report_id=data)
            self.numbered = True
        elif tag == 0x9:
            if data > MAX_REPORT_COUNT:
                raise DescriptorError(item.offset, f"Report Count {data} is over {MAX_REPORT_COUNT}")
            self.globals = replace(g, report_count=data)
        elif tag == 0xA:
            if len(self.pushed) >= MAX_PUSH:
                raise DescriptorError(item.offset, f"Push nested more than {MAX_PUSH} deep")
            self.pushed.append(g)
        elif tag == 0xB:
            if not self.pushed:
                raise DescriptorError(item.offset, "Pop with nothing pushed")
            self.globals = self.pushed.pop()
        else:
            raise DescriptorError(item.offset, f"global item tag 0x{tag:x} is not a HID 1.11 item")

    def local(self, item: _Item) -> None:
        loc, tag = self.locals, item.tag
        extended = item.size == 4
        full = item.data if extended else usage(self.globals.usage_page, item.data)
        if tag in (0x0, 0x1, 0x2) and loc.delimiter_branch > 1:
            pass  # a second Delimiter set only names the first one's usages again (Linux ignores it too)
        elif tag == 0x0:
            loc.add(item.offset, full, extended)
        elif tag == 0x1:
            loc.minimum = (full, extended)
        elif tag == 0x2:
            self.usage_range(item, full, extended)
        elif tag in (0x3, 0x4, 0x5, 0x7, 0x8, 0x9):
            pass  # designators and strings
        elif tag == 0xA:
            self.delimiter(item)
        else:
            raise DescriptorError(item.offset, f"local item tag 0x{tag:x} is not a HID 1.11 item")

    def usage_range(self, item: _Item, last: int, last_extended: bool) -> None:
        loc = self.locals
        if loc.minimum is None:
            raise DescriptorError(item.offset, "Usage Maximum without a Usage Minimum")
        first, first_extended = loc.minimum
        loc.minimum = None
        if first_extended and last_extended and first >> 16 != last >> 16:
            raise DescriptorError(item.offset, "Usage Minimum and Maximum on different pages")
        page = (first if first_extended else last) >> 16
        low, high = first & 0xFFFF, last & 0xFFFF
        high = min(high, low + MAX_USAGES - len(loc.usages) - 1)  # Linux clips a range, too
        for usage_id in range(low, high + 1):
            loc.add(item.offset, usage(page, usage_id), first_extended or last_extended)

    def delimiter(self, item: _Item) -> None:
        loc = self.locals
        if item.data:
            if loc.delimiter_depth:
                raise DescriptorError(item.offset, "nested Delimiter")
            loc.delimiter_depth, loc.delimiter_branch = 1, loc.delimiter_branch + 1
        elif not loc.delimiter_depth:
            raise DescriptorError(item.offset, "Delimiter closes a set never opened")
        else:
            loc.delimiter_depth = 0


def parse_descriptor(data: bytes) -> ReportDescriptor:
    """Read a report descriptor (``/sys/class/hidraw/hidrawN/device/report_descriptor``).

    Raises :class:`DescriptorError`, naming the byte, for a descriptor that is cut short or is not one:
    an item wanting more bytes than are left, a collection or Delimiter left open, Pop without Push, a
    Report ID of 0, limits Linux refuses, and items HID 1.11 does not define (Linux skips unknown main and
    local items; a descriptor with them is far more likely misread than a headset's).
    """
    return _Parser().parse(bytes(data))


# --- the telephony part


@dataclass(frozen=True)
class Control:
    """One button (input) or indicator (output) of the headset's telephony collection, where it sits."""

    name: str  # usage_name(usage): hook_switch, phone_mute, off_hook, key_5, 0x0b:0x99...
    usage: int
    kind: ReportKind
    report_id: int
    bit_offset: int  # of its element; an array's elements follow each other from here
    bit_size: int
    relative: bool  # a toggle or one-shot press, not a state
    array: bool  # one of an array's usages: its value is 1 while any element selects it

    @property
    def absolute(self) -> bool:
        return not self.relative


@dataclass(frozen=True)
class InputReport:
    """One report as read from the headset, and the values of the call controls it carries."""

    report_id: int
    values: dict[str, int]  # control name -> value; empty when ignored or when it has no call control
    ignored: str | None = None  # why nothing was read from it
    extra_bytes: int = 0  # bytes past the descriptor's length, not read (some devices pad reports)


@dataclass(frozen=True)
class OutputState:
    """What the headset should show about the call, mirrored in its LEDs and ringer.

    ``off_hook`` stays on for the whole call, held or not: some Jabras report on-hook, and end the call,
    when it is cleared. ``mute`` lights both Mute and Microphone: the Usage Tables do not say which way
    Microphone lights; a Gigaset dongle's documentation lights it for mute.
    """

    off_hook: bool = False
    ring: bool = False
    hold: bool = False
    mute: bool = False

    def usages(self) -> dict[int, int]:
        return {
            Usage.LED_OFF_HOOK: int(self.off_hook),
            Usage.LED_RING: int(self.ring),
            Usage.RINGER: int(self.ring),
            Usage.LED_HOLD: int(self.hold),
            Usage.LED_MUTE: int(self.mute),
            Usage.LED_MICROPHONE: int(self.mute),
        }


#: The output usages the phone drives: a report is written only when it carries one of them (or a usage
#: asked for by name), so vendor reports in the telephony collection are never overwritten with zeros.
CALL_OUTPUTS = frozenset(OutputState().usages())


def _controls(f: Field) -> list[Control]:
    """A field's controls: one per declared usage of a variable field (elements past the last usage repeat
    it and are not controls of their own), one per selectable usage of an array."""
    if f.constant or not f.usages:
        return []
    if f.array:
        span = f.usages[: max(0, f.logical_maximum - f.logical_minimum + 1)]
        return [
            Control(usage_name(u), u, f.kind, f.report_id, f.bit_offset, f.size, f.relative, True)
            for u in dict.fromkeys(span)
            if u & 0xFFFF  # usage 0 of a page is "no control" (Button page: no button pressed)
        ]
    return [
        Control(usage_name(u), u, f.kind, f.report_id, f.bit_offset + i * f.size, f.size, f.relative, False)
        for i, u in enumerate(f.usages[: f.count])
    ]


def _element(bits: int, offset: int, size: int, signed: bool) -> int:
    value = bits >> offset & ((1 << size) - 1)
    return _signed(value, size) if signed else value


def _read(f: Field, controls: Sequence[Control], bits: int) -> dict[str, int]:
    signed = f.logical_minimum < 0
    if not f.array:
        return {c.name: _element(bits, c.bit_offset, c.bit_size, signed) for c in controls}
    selected = set()
    for i in range(f.count):
        value = _element(bits, f.bit_offset + i * f.size, f.size, signed)
        index = value - f.logical_minimum
        if f.logical_minimum <= value <= f.logical_maximum and index < len(f.usages):
            selected.add(f.usages[index])  # out of range: the null value, nothing pressed
    return {c.name: int(c.usage in selected) for c in controls}


def _write(f: Field, values: Mapping[int, int]) -> int:
    """The field's bits in its report, for the wanted values (0 for every usage not given, and padding)."""
    if f.constant or not f.usages:
        return 0
    mask = (1 << f.size) - 1
    if not f.array:
        return sum(
            (values.get(f.usages[min(i, len(f.usages) - 1)], 0) & mask) << (f.bit_offset + i * f.size)
            for i in range(f.count)
        )
    span = f.usages[: max(0, f.logical_maximum - f.logical_minimum + 1)]
    chosen = [f.logical_minimum + i for i, u in enumerate(span) if values.get(u)][: f.count]
    null = f.logical_minimum - 1 if f.logical_minimum > 0 else f.logical_maximum + 1
    chosen += [null if 0 <= null <= mask else 0] * (f.count - len(chosen))
    return sum((v & mask) << (f.bit_offset + i * f.size) for i, v in enumerate(chosen))


class TelephonyHeadset:
    """The telephony side of one USB headset's descriptor: its call buttons and its call indicators.

    Every top-level Phone, Handset or Headset collection on the Telephony page counts (the first names the
    device); the controls are those of their Input and Output items, in descriptor order. Raises
    :class:`NotTelephonyError` when there is no such collection, or no control in it.
    """

    def __init__(self, descriptor: ReportDescriptor) -> None:
        self.descriptor = descriptor
        self.numbered = descriptor.numbered
        chosen = [i for i, a in enumerate(descriptor.applications) if a.usage in TELEPHONY_APPLICATIONS]
        if not chosen:
            raise NotTelephonyError(_why_not(descriptor))
        self.applications = tuple(descriptor.applications[i] for i in chosen)
        self.name = self.applications[0].name
        fields = [(f, _controls(f)) for f in descriptor.fields if f.application in chosen]
        self.inputs = tuple(c for f, controls in fields if f.kind is ReportKind.INPUT for c in controls)
        self.outputs = tuple(c for f, controls in fields if f.kind is ReportKind.OUTPUT for c in controls)
        self.report_ids = frozenset(f.report_id for f, _ in fields)
        self._readers: dict[int, list[tuple[Field, list[Control]]]] = {}
        for f, controls in fields:
            if f.kind is ReportKind.INPUT and controls:
                self._readers.setdefault(f.report_id, []).append((f, controls))
        if not self.inputs and not self.outputs:
            raise NotTelephonyError(f"its {self.name} collection has no call button and no indicator")

    @classmethod
    def from_descriptor(cls, data: bytes) -> TelephonyHeadset:
        """Parse and pick (:class:`DescriptorError`, :class:`NotTelephonyError`)."""
        return cls(parse_descriptor(data))

    def control(self, name: str) -> Control | None:
        """The first input or output of that name."""
        return next((c for c in self.inputs + self.outputs if c.name == name), None)

    def decode(self, report: bytes) -> InputReport:
        """One read from the hidraw node: the values of the call controls in it.

        Never raises: an empty or short report, or one of a report ID the descriptor does not declare,
        comes back with ``ignored`` saying why; bytes past the report's length are left unread.
        """
        report = bytes(report)
        if not report:
            return InputReport(0, {}, "an empty read")
        report_id, body = (report[0], report[1:]) if self.numbered else (0, report)
        length = self.descriptor.report_length(ReportKind.INPUT, report_id)
        if length is None:
            unknown = f"the descriptor declares no input report{f' {report_id}' if self.numbered else ''}"
            return InputReport(report_id, {}, unknown)
        if len(body) < length:
            short = f"{_report(report_id)} has {_bytes(len(body))}, its descriptor says {length}"
            return InputReport(report_id, {}, short)
        bits = int.from_bytes(body[:length], "little")
        values: dict[str, int] = {}
        for f, controls in self._readers.get(report_id, ()):
            values.update(_read(f, controls, bits))
        return InputReport(report_id, values, extra_bytes=len(body) - length)

    def output_reports(self, wanted: OutputState | Mapping[int, int]) -> dict[int, bytes]:
        """The output reports to write for the wanted indicator states: report ID -> the bytes for ``write()``.

        Each is the whole report, every bit set from ``wanted`` (usages not given, other data and padding
        are 0), led by the report ID, which is 0 when the device does not number its reports (hidraw then
        drops it). Only reports carrying a usage of :data:`CALL_OUTPUTS` or of ``wanted`` are built.
        """
        if isinstance(wanted, OutputState):
            values = wanted.usages()
        else:
            values = {int(u): int(v) for u, v in wanted.items()}
        useful = CALL_OUTPUTS | values.keys()
        reports: dict[int, bytes] = {}
        for report_id in dict.fromkeys(c.report_id for c in self.outputs):
            fields = self.descriptor.fields_of(ReportKind.OUTPUT, report_id)
            if not any(u in useful for f in fields if not f.constant for u in f.usages):
                continue
            body = sum(_write(f, values) for f in fields)
            length = self.descriptor.report_length(ReportKind.OUTPUT, report_id) or 0
            reports[report_id] = bytes([report_id]) + body.to_bytes(length, "little")
        return reports

    def describe(self) -> str:
        """What the doctor prints for the headset.

        ``Telephony Headset: inputs hook_switch (absolute), phone_mute (relative) (report 2); outputs
        off_hook, ring (report 3)``; an array's usages as one range, ``key_0..key_pound (array)``.
        """
        return f"{self.name}: inputs {self._list(self.inputs)}; outputs {self._list(self.outputs)}"

    def _list(self, controls: Sequence[Control]) -> str:
        groups: dict[int, list[str]] = {}
        for report_id, words in _words(controls):
            groups.setdefault(report_id, []).append(words)
        parts = [
            ", ".join(words) + (f" ({_report(report_id)})" if self.numbered else "")
            for report_id, words in groups.items()
        ]
        return ", ".join(parts) or "none"


def _words(controls: Sequence[Control]) -> Iterator[tuple[int, str]]:
    """Each control as the doctor words it, an array's usages as one range: (report ID, words)."""
    for _, run in groupby(controls, key=lambda c: (c.report_id, c.bit_offset) if c.array else c):
        first, *rest = run
        if first.array:
            yield first.report_id, f"{first.name}..{rest[-1].name} (array)" if rest else f"{first.name} (array)"
        elif first.kind is ReportKind.INPUT:
            yield first.report_id, f"{first.name} ({'relative' if first.relative else 'absolute'})"
        else:
            yield first.report_id, first.name


def _report(report_id: int) -> str:
    return f"report {report_id}" if report_id else "the report"


def _bytes(n: int) -> str:
    return f"{n} byte" if n == 1 else f"{n} bytes"


def _why_not(descriptor: ReportDescriptor) -> str:
    pages = {a.usage >> 16 for a in descriptor.applications}
    reason = "no top-level Phone, Handset or Headset collection on the Telephony page (0x0B)"
    reason += f"; it has {descriptor.summary()}"
    if POLY_VENDOR_PAGE in pages:
        reason += (
            "; vendor page 0xFFA0 is where older Poly/Plantronics headsets put their call button, "
            "in a protocol of their own that this plugin does not speak"
        )
    return reason


def describe(data: bytes) -> str:
    """One line for the doctor about any hidraw node's descriptor; never raises."""
    try:
        return TelephonyHeadset.from_descriptor(data).describe()
    except (DescriptorError, NotTelephonyError) as e:
        return str(e)
