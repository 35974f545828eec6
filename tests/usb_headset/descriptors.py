"""Report descriptors of USB headsets, built by hand from the HID Usage Tables.

No public capture of a Jabra, Logitech or Poly descriptor was found, so these follow the layouts the
headset families are known to use (../shared/HEADSETS_NOTES.md): the family names say which behaviour each
one stands for, not that the bytes are a real device's. Each item is commented as a descriptor dump prints
it; the bit positions the tests rely on are noted beside the Input and Output items.

To add a real headset: on a Pi with it plugged in, find its telephony node (``grep -l . /sys/class/hidraw/
hidraw*/device/report_descriptor``, one per interface), dump it with ``xxd -i /sys/class/hidraw/hidrawN/
device/report_descriptor`` (or hid-tools' ``hid-recorder``, which also prints the items), paste the bytes
here under the product's name with its USB vendor:product ID, and give it a test like the ones in
test_hid.py (controls found, a hook press decoded, the output reports byte by byte).
"""

from __future__ import annotations

# fmt: off

#: Jabra-like (a Link 280 / Evolve dongle): numbered reports; a latching (absolute) hook switch that reports
#: the headset's state, a relative Phone Mute toggle, Flash, Redial and a keypad array in input report 2;
#: the LEDs in output report 3; volume keys in a Consumer collection (report 1) and a vendor channel (report 5).
JABRA_LIKE = bytes([
    0x05, 0x0C,        # Usage Page (Consumer)
    0x09, 0x01,        # Usage (Consumer Control)
    0xA1, 0x01,        # Collection (Application)
    0x85, 0x01,        #   Report ID (1)
    0x15, 0x00,        #   Logical Minimum (0)
    0x25, 0x01,        #   Logical Maximum (1)
    0x09, 0xEA,        #   Usage (Volume Decrement)
    0x09, 0xE9,        #   Usage (Volume Increment)
    0x09, 0xE2,        #   Usage (Mute)
    0x75, 0x01,        #   Report Size (1)
    0x95, 0x03,        #   Report Count (3)
    0x81, 0x06,        #   Input (Data,Var,Rel)                     report 1 bits 0-2
    0x95, 0x05,        #   Report Count (5)
    0x81, 0x01,        #   Input (Const,Array,Abs)                  bits 3-7: padding
    0xC0,              # End Collection
    0x05, 0x0B,        # Usage Page (Telephony)
    0x09, 0x05,        # Usage (Headset)
    0xA1, 0x01,        # Collection (Application)
    0x85, 0x02,        #   Report ID (2)
    0x15, 0x00,        #   Logical Minimum (0)
    0x25, 0x01,        #   Logical Maximum (1)
    0x75, 0x01,        #   Report Size (1)
    0x09, 0x20,        #   Usage (Hook Switch)
    0x09, 0x97,        #   Usage (Line Busy Tone)
    0x95, 0x02,        #   Report Count (2)
    0x81, 0x22,        #   Input (Data,Var,Abs,No Preferred)        report 2 bits 0-1: states
    0x09, 0x2F,        #   Usage (Phone Mute)
    0x95, 0x01,        #   Report Count (1)
    0x81, 0x06,        #   Input (Data,Var,Rel)                     bit 2: a toggle
    0x09, 0x21,        #   Usage (Flash)
    0x81, 0x02,        #   Input (Data,Var,Abs)                     bit 3: 1 while pressed
    0x09, 0x24,        #   Usage (Redial)
    0x81, 0x06,        #   Input (Data,Var,Rel)                     bit 4: one shot
    0x95, 0x03,        #   Report Count (3)
    0x81, 0x01,        #   Input (Const,Array,Abs)                  bits 5-7: padding
    0xA4,              #   Push
    0x09, 0x06,        #   Usage (Telephony Key Pad)
    0xA1, 0x02,        #   Collection (Logical)
    0x19, 0xB0,        #     Usage Minimum (Phone Key 0)
    0x29, 0xBB,        #     Usage Maximum (Phone Key Pound)
    0x15, 0x01,        #     Logical Minimum (1)
    0x25, 0x0C,        #     Logical Maximum (12)
    0x75, 0x04,        #     Report Size (4)
    0x95, 0x01,        #     Report Count (1)
    0x81, 0x40,        #     Input (Data,Array,Abs,Null State)      bits 8-11: the key held, 0 for none
    0xC0,              #   End Collection
    0xB4,              #   Pop                                      (size 1, count 3, logical 0..1 again)
    0x95, 0x04,        #   Report Count (4)
    0x81, 0x01,        #   Input (Const,Array,Abs)                  bits 12-15: padding
    0x85, 0x03,        #   Report ID (3)
    0x05, 0x08,        #   Usage Page (LED)
    0x09, 0x17,        #   Usage (Off-Hook)
    0x09, 0x18,        #   Usage (Ring)
    0x09, 0x09,        #   Usage (Mute)
    0x09, 0x20,        #   Usage (Hold)
    0x91, 0x22,        #   Output (Data,Var,Abs,No Preferred)       report 3 bits 0-3
    0x91, 0x01,        #   Output (Const,Array,Abs)                 bits 4-7: padding
    0xC0,              # End Collection
    0x06, 0x30, 0xFF,  # Usage Page (Vendor 0xFF30)
    0x09, 0x01,        # Usage (0x01)
    0xA1, 0x01,        # Collection (Application)
    0x85, 0x05,        #   Report ID (5)
    0x15, 0x00,        #   Logical Minimum (0)
    0x26, 0xFF, 0x00,  #   Logical Maximum (255)
    0x75, 0x08,        #   Report Size (8)
    0x95, 0x02,        #   Report Count (2)
    0x09, 0x02,        #   Usage (0x02)
    0xB1, 0x02,        #   Feature (Data,Var,Abs)                   report 5, 2 bytes
    0x09, 0x03,        #   Usage (0x03)
    0x91, 0x02,        #   Output (Data,Var,Abs)                    report 5, 2 bytes: never written
    0xC0,              # End Collection
])

#: Logitech-like (an H570e/H650e): a momentary hook switch that is relative (each press toggles the call),
#: the Telephony page's Ringer instead of a Ring LED (an extended usage among LED-page usages), no Hold LED,
#: and input and output sharing report ID 8, the output with a vendor byte after the LEDs.
LOGITECH_LIKE = bytes([
    0x05, 0x0B,        # Usage Page (Telephony)
    0x09, 0x05,        # Usage (Headset)
    0xA1, 0x01,        # Collection (Application)
    0x85, 0x08,        #   Report ID (8)
    0x15, 0x00,        #   Logical Minimum (0)
    0x25, 0x01,        #   Logical Maximum (1)
    0x75, 0x01,        #   Report Size (1)
    0x95, 0x02,        #   Report Count (2)
    0x09, 0x20,        #   Usage (Hook Switch)
    0x09, 0x2F,        #   Usage (Phone Mute)
    0x81, 0x06,        #   Input (Data,Var,Rel)                     report 8 bits 0-1: toggles
    0x05, 0x09,        #   Usage Page (Button)
    0x09, 0x01,        #   Usage (Button 1)
    0x95, 0x01,        #   Report Count (1)
    0x81, 0x06,        #   Input (Data,Var,Rel)                     bit 2: reject
    0x95, 0x05,        #   Report Count (5)
    0x81, 0x01,        #   Input (Const,Array,Abs)                  bits 3-7: padding
    0x05, 0x08,        #   Usage Page (LED)
    0x09, 0x17,        #   Usage (Off-Hook)
    0x09, 0x09,        #   Usage (Mute)
    0x0B, 0x9E, 0x00, 0x0B, 0x00,  # Usage (Telephony: Ringer)   extended: its page is its own
    0x95, 0x03,        #   Report Count (3)
    0x91, 0x22,        #   Output (Data,Var,Abs,No Preferred)       report 8 bits 0-2
    0x95, 0x05,        #   Report Count (5)
    0x91, 0x01,        #   Output (Const,Array,Abs)                 bits 3-7: padding
    0x06, 0x43, 0xFF,  #   Usage Page (Vendor 0xFF43)
    0x09, 0x01,        #   Usage (0x01)
    0x26, 0xFF, 0x00,  #   Logical Maximum (255)
    0x75, 0x08,        #   Report Size (8)
    0x95, 0x01,        #   Report Count (1)
    0x91, 0x02,        #   Output (Data,Var,Abs)                    bits 8-15: vendor data, written 0
    0xC0,              # End Collection
])

#: A simple headset that does not number its reports: one input and one output report, no ID byte read.
SIMPLE_UNNUMBERED = bytes([
    0x05, 0x0B,        # Usage Page (Telephony)
    0x09, 0x05,        # Usage (Headset)
    0xA1, 0x01,        # Collection (Application)
    0x15, 0x00,        #   Logical Minimum (0)
    0x25, 0x01,        #   Logical Maximum (1)
    0x75, 0x01,        #   Report Size (1)
    0x95, 0x01,        #   Report Count (1)
    0x09, 0x20,        #   Usage (Hook Switch)
    0x81, 0x22,        #   Input (Data,Var,Abs,No Preferred)        bit 0
    0x09, 0x2F,        #   Usage (Phone Mute)
    0x81, 0x06,        #   Input (Data,Var,Rel)                     bit 1
    0x95, 0x06,        #   Report Count (6)
    0x81, 0x03,        #   Input (Const,Var,Abs)                    bits 2-7: padding
    0x05, 0x08,        #   Usage Page (LED)
    0x09, 0x17,        #   Usage (Off-Hook)
    0x09, 0x18,        #   Usage (Ring)
    0x09, 0x09,        #   Usage (Mute)
    0x09, 0x21,        #   Usage (Microphone)
    0x95, 0x04,        #   Report Count (4)
    0x91, 0x22,        #   Output (Data,Var,Abs,No Preferred)       bits 0-3
    0x91, 0x03,        #   Output (Const,Var,Abs)                   bits 4-7: padding
    0xC0,              # End Collection
])

#: Poly-like (an older Plantronics base): volume keys on the Consumer page and the call button on the vendor
#: page 0xFFA0, with no Telephony collection at all: the plugin must say it cannot use it.
POLY_VENDOR = bytes([
    0x05, 0x0C,        # Usage Page (Consumer)
    0x09, 0x01,        # Usage (Consumer Control)
    0xA1, 0x01,        # Collection (Application)
    0x85, 0x01,        #   Report ID (1)
    0x15, 0x00,        #   Logical Minimum (0)
    0x25, 0x01,        #   Logical Maximum (1)
    0x09, 0xE9,        #   Usage (Volume Increment)
    0x09, 0xEA,        #   Usage (Volume Decrement)
    0x75, 0x01,        #   Report Size (1)
    0x95, 0x02,        #   Report Count (2)
    0x81, 0x06,        #   Input (Data,Var,Rel)
    0x95, 0x06,        #   Report Count (6)
    0x81, 0x01,        #   Input (Const,Array,Abs)
    0xC0,              # End Collection
    0x06, 0xA0, 0xFF,  # Usage Page (Vendor 0xFFA0)
    0x09, 0x01,        # Usage (0x01)
    0xA1, 0x01,        # Collection (Application)
    0x85, 0x03,        #   Report ID (3)
    0x09, 0xB7,        #   Usage (0xB7)                             talk
    0x09, 0xB5,        #   Usage (0xB5)                             mute
    0x95, 0x02,        #   Report Count (2)
    0x81, 0x02,        #   Input (Data,Var,Abs)
    0x95, 0x06,        #   Report Count (6)
    0x81, 0x01,        #   Input (Const,Array,Abs)
    0x09, 0x8F,        #   Usage (0x8F)                             call indicator
    0x95, 0x01,        #   Report Count (1)
    0x91, 0x02,        #   Output (Data,Var,Abs)
    0x95, 0x07,        #   Report Count (7)
    0x91, 0x01,        #   Output (Const,Array,Abs)
    0xC0,              # End Collection
])

# fmt: on

#: JABRA_LIKE cut inside the vendor collection's two-byte Logical Maximum (0x26, 0xFF, 0x00): one byte short.
TRUNCATED_AT = JABRA_LIKE.index(bytes([0x26, 0xFF, 0x00]))
TRUNCATED = JABRA_LIKE[: TRUNCATED_AT + 2]

#: Not a report descriptor: a USB device descriptor (18 bytes: length, type 1, bcdUSB 2.00, class 0, ...,
#: idVendor 0x0B0E) read where the report descriptor was expected. Its first byte, 0x12, reads as a main
#: item with tag 1, which HID does not define.
GARBAGE = bytes.fromhex("12 01 00 02 00 00 00 40 0e 0b 48 24 00 01 01 02 03 01")
