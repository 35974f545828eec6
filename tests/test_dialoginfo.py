"""Dialog-info bodies (RFC 4235) as Kamailio's presence_dialoginfo sends them, and bad ones."""

from __future__ import annotations

import pytest

from firmware_app.dialoginfo import LineState, line_state


def body(*dialogs: tuple[str, str]) -> str:
    items = "".join(
        f'<dialog id="d{i}" call-id="c{i}" direction="{direction}"><state>{state}</state></dialog>'
        for i, (direction, state) in enumerate(dialogs)
    )
    return (
        '<?xml version="1.0"?><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="3" '
        f'state="full" entity="sip:1003@127.0.0.1">{items}</dialog-info>'
    )


@pytest.mark.parametrize(
    ("dialogs", "expected"),
    [
        ((), LineState.IDLE),
        ((("recipient", "Trying"),), LineState.RINGING),  # Kamailio's capital T
        ((("recipient", "early"),), LineState.RINGING),
        ((("recipient", "confirmed"),), LineState.BUSY),
        ((("initiator", "early"),), LineState.BUSY),  # dialling out
        ((("recipient", "terminated"),), LineState.IDLE),  # kept listed for a while after the call
        ((("recipient", "early"), ("initiator", "confirmed")), LineState.BUSY),  # busy, another call rings
    ],
)
def test_line_states(dialogs, expected):
    assert line_state(body(*dialogs)) is expected


def test_an_empty_first_notify_is_idle():
    assert line_state("") is LineState.IDLE


@pytest.mark.parametrize(
    "bad",
    [
        "<dialog-info",  # cut off
        "<presence xmlns='urn:ietf:params:xml:ns:pidf'/>",  # another document
        '<!DOCTYPE x [<!ENTITY a "aaaa">]><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info">&a;</dialog-info>',
        "<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info'>" + "x" * 70000 + "</dialog-info>",
    ],
)
def test_bad_bodies_are_not_known(bad):
    assert line_state(bad) is None


def test_the_documents_version_comes_with_the_state():
    from firmware_app.dialoginfo import read

    assert read(body(("recipient", "confirmed"))) == (LineState.BUSY, 3)
    assert read("") == (LineState.IDLE, None)
    assert read("<dialog-info") == (None, None)
