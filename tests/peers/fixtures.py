"""pytest fixtures for the real SIP peers: one Kamailio per session, baresip, Linphone and sipp targets per test."""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from .baresip import Baresip
from .kamailio import Kamailio
from .linphone import Linphone
from .sipp import Mode, SippTarget
from .support import PeerError, require_binary

USERS: tuple[str, ...] = tuple(str(number) for number in range(1000, 1010))
PASSWORDS: dict[str, str] = {user: f"pw{user}" for user in USERS}
# Transfers to these users are refused by the proxy with 603 Decline (the PBX's transfer policy).
REFUSED_REFER_TARGETS: tuple[str, ...] = ("1099",)

_TEST_START = pytest.StashKey[float]()
_KAMAILIO_FIXTURES = ("kamailio", "kamailio_challenging_refer")


class BaresipFactory(Protocol):
    def __call__(self, user: str, *, answermode: str = "manual") -> Baresip: ...


class LinphoneFactory(Protocol):
    def __call__(self, user: str, *, auto_answer: bool = False) -> Linphone: ...


class SippTargetFactory(Protocol):
    def __call__(
        self, user: str, mode: Mode = "answer", *, max_calls: int | None = None, variables: dict[str, str] | None = None
    ) -> SippTarget: ...


def _password(user: str) -> str:
    try:
        return PASSWORDS[user]
    except KeyError:
        raise PeerError(f"user {user!r} is not provisioned; the test Kamailio knows {', '.join(USERS)}") from None


def _require(binary: str) -> None:
    """Fail (not skip) the test when a peer is missing: the project's setup installs all of them."""
    try:
        require_binary(binary)
    except PeerError as exc:
        pytest.fail(str(exc), pytrace=False)


def _start_kamailio(workdir: Path, challenge_refer: bool) -> Kamailio:
    proxy = Kamailio(workdir, PASSWORDS, challenge_refer=challenge_refer, refuse_refer_to=REFUSED_REFER_TARGETS)
    try:
        proxy.start()
    except PeerError as exc:
        pytest.fail(f"Kamailio did not start: {exc}", pytrace=False)
    return proxy


@pytest.fixture(scope="session")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kamailio]:
    """Registrar/proxy for the session: users 1000..1009 (PASSWORDS), REFER not challenged, REFER to 1099 -> 603."""
    proxy = _start_kamailio(tmp_path_factory.mktemp("kamailio"), challenge_refer=False)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def kamailio_challenging_refer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kamailio]:
    """A second registrar/proxy that answers REFERs from subscribers with 407 until they authenticate."""
    proxy = _start_kamailio(tmp_path_factory.mktemp("kamailio-refer-auth"), challenge_refer=True)
    yield proxy
    proxy.stop()


Peer = TypeVar("Peer", Baresip, Linphone, SippTarget)


def _start(peer: Peer, started: list[Peer]) -> Peer:
    """Start ``peer``, listed first so that a half-started peer is stopped with the others."""
    started.append(peer)
    peer.start()
    return peer


def _stop_all(peers: Sequence[Baresip | Linphone | SippTarget]) -> None:
    errors: list[BaseException] = []
    for peer in reversed(peers):
        try:
            peer.stop()
        except Exception as exc:  # every peer must get its stop()
            errors.append(exc)
    if errors:
        raise errors[0]


def _baresip_factory(proxy: Kamailio, workdir: Path) -> Generator[BaresipFactory, None, None]:
    _require("baresip")
    started: list[Baresip] = []

    def make(user: str, *, answermode: str = "manual") -> Baresip:
        return _start(Baresip(workdir / f"baresip-{user}-{len(started)}", user, _password(user), proxy,
                              answermode=answermode), started)

    yield make
    _stop_all(started)


@pytest.fixture
def baresip_factory(kamailio: Kamailio, tmp_path: Path) -> Iterator[BaresipFactory]:
    """make(user) -> a started, registered Baresip on the session Kamailio; all are stopped after the test."""
    yield from _baresip_factory(kamailio, tmp_path)


@pytest.fixture
def baresip_factory_challenging_refer(kamailio_challenging_refer: Kamailio,
                                      tmp_path: Path) -> Iterator[BaresipFactory]:
    """Like baresip_factory, registered on the Kamailio that challenges REFER."""
    yield from _baresip_factory(kamailio_challenging_refer, tmp_path)


@pytest.fixture(scope="module")
def kamailio_blf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kamailio]:
    """A registrar/proxy that also serves the dialog state of its users (RFC 4235): tests/peers/kamailio_blf.py."""
    from tests.peers.kamailio_blf import BlfKamailio

    proxy = BlfKamailio(tmp_path_factory.mktemp("kamailio-blf"), PASSWORDS, refuse_refer_to=REFUSED_REFER_TARGETS)
    try:
        proxy.start()
    except PeerError as exc:
        pytest.fail(f"Kamailio with the presence modules did not start: {exc} (tests/setup.sh installs "
                    "kamailio-presence-modules)", pytrace=False)
    yield proxy
    proxy.stop()


@pytest.fixture
def baresip_factory_blf(kamailio_blf: Kamailio, tmp_path: Path) -> Iterator[BaresipFactory]:
    """Like baresip_factory, registered on the Kamailio that serves dialog state."""
    yield from _baresip_factory(kamailio_blf, tmp_path)


@pytest.fixture
def sipp_target_factory_blf(kamailio_blf: Kamailio, tmp_path: Path) -> Iterator[SippTargetFactory]:
    """Like sipp_target_factory, registered on the Kamailio that serves dialog state."""
    yield from _sipp_target_factory(kamailio_blf, tmp_path)


@pytest.fixture
def linphone_factory(kamailio: Kamailio, tmp_path: Path) -> Iterator[LinphoneFactory]:
    """make(user, auto_answer=False) -> a started Linphone registered on the session Kamailio; all are stopped
    after the test."""
    _require("linphone-daemon")
    started: list[Linphone] = []

    def make(user: str, *, auto_answer: bool = False) -> Linphone:
        return _start(Linphone(tmp_path / f"linphone-{user}-{len(started)}", user, _password(user), kamailio,
                               auto_answer=auto_answer), started)

    yield make
    _stop_all(started)


def _sipp_target_factory(proxy: Kamailio, workdir: Path) -> Generator[SippTargetFactory, None, None]:
    _require("sipp")
    started: list[SippTarget] = []

    def make(user: str, mode: Mode = "answer", *, max_calls: int | None = None,
             variables: dict[str, str] | None = None) -> SippTarget:
        return _start(SippTarget(workdir / f"sipp-{user}-{len(started)}", user, _password(user), proxy, mode,
                                 max_calls=max_calls, variables=variables), started)

    yield make
    _stop_all(started)


@pytest.fixture
def sipp_target_factory(kamailio: Kamailio, tmp_path: Path) -> Iterator[SippTargetFactory]:
    """make(user, mode) -> a sipp target registered on the session Kamailio ("answer", "busy", "no_answer")."""
    yield from _sipp_target_factory(kamailio, tmp_path)


@pytest.fixture
def sipp_target_factory_challenging_refer(kamailio_challenging_refer: Kamailio,
                                          tmp_path: Path) -> Iterator[SippTargetFactory]:
    """Like sipp_target_factory, registered on the Kamailio that challenges REFER."""
    yield from _sipp_target_factory(kamailio_challenging_refer, tmp_path)


# -- the ladder in failure reports -----------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_TEST_START] = time.time()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # FIRMWARE_APP_LADDERS=1 attaches the ladder to passing tests too (shown with pytest -rP).
    if report.when == "call" and (report.failed or os.environ.get("FIRMWARE_APP_LADDERS") == "1"):
        funcargs: dict[str, object] = getattr(item, "funcargs", {})
        for name in _KAMAILIO_FIXTURES:
            proxy = funcargs.get(name)
            if isinstance(proxy, Kamailio):
                ladder = proxy.format_ladder(since=item.stash.get(_TEST_START, None))
                report.sections.append((f"SIP ladder at {name} ({proxy.domain})", ladder))
    return report


__all__ = [
    "PASSWORDS",
    "REFUSED_REFER_TARGETS",
    "USERS",
    "BaresipFactory",
    "LinphoneFactory",
    "SippTargetFactory",
    "baresip_factory",
    "baresip_factory_challenging_refer",
    "kamailio",
    "kamailio_challenging_refer",
    "linphone_factory",
    "sipp_target_factory",
    "sipp_target_factory_challenging_refer",
]
