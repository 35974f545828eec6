"""Fixtures for the fleet tests: a real Mosquitto per test (tests/fleet/mosquitto.py), its log in failure reports."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.fleet.mosquitto import Mosquitto, PeerError, Watcher, mosquitto_installed
from tests.peers.kamailio import Kamailio

# The fixture's users: two phones and the fleet operator (user name "operator" in the broker's ACL).
PHONES: dict[str, str] = {"phone-a": "pw-a", "phone-b": "pw-b"}
OPERATOR: tuple[str, str] = ("operator", "pw-op")
NOT_INSTALLED = "mosquitto or mosquitto-clients is not installed (tests/setup.sh installs them)"
FLEET = [f"phone-{n:02d}" for n in range(1, 21)]
#: The fleet tests' SIP users: one per device, on a registrar of their own (fleet_kamailio), so a phone they
#: kill on purpose leaves its stale registration there and not on the session's Kamailio.
SIP_USERS = {name: f"sip-{name}" for name in ("phone-a", "phone-b", "caller", *FLEET)}


@pytest.fixture(scope="module")
def fleet_kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kamailio]:
    proxy = Kamailio(tmp_path_factory.mktemp("fleet-kamailio"), SIP_USERS)
    try:
        proxy.start()
    except PeerError as exc:
        pytest.fail(f"Kamailio did not start: {exc}", pytrace=False)
    yield proxy
    proxy.stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """Mosquitto on 127.0.0.1 (TLS only, CA in ``mosquitto.ca_file``), prefix "firmware-app", users phone-a/pw-a,
    phone-b/pw-b and operator/pw-op. Ready in about 60 ms (PKI 35, users 11, start 11): each test has its own."""
    if not mosquitto_installed():
        pytest.fail(NOT_INSTALLED, pytrace=False)
    broker = Mosquitto(tmp_path / "mosquitto")
    for user, password in (*PHONES.items(), OPERATOR):
        broker.add_user(user, password)
    try:
        broker.start()
    except PeerError as exc:
        pytest.fail(f"Mosquitto did not start: {exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(autouse=True)
def _stop_watchers() -> Iterator[None]:
    """A Watcher a test left running is stopped after it (its mosquitto_sub would retry its broker forever)."""
    yield
    Watcher.stop_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        broker = getattr(item, "funcargs", {}).get("mosquitto")
        if isinstance(broker, Mosquitto):
            report.sections.append((f"Mosquitto log ({broker.log_path})", broker.log_tail(60)))
    return report
