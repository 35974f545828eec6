"""Plugin: USB headsets' call controls through HID telephony (hidraw)."""
