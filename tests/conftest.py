"""Shared fixtures: real SIP peers on loopback (tests/peers) and the phone run as a real process."""

pytest_plugins = ["tests.peers.fixtures", "tests.phone_process"]
