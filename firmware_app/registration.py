"""The account's registration and its retry policy.

PJSUA's own retries are off (the engine sets them to 0): the phone decides. Wrong credentials (401, 403,
407) do not fix themselves, so the retries back off, doubling from ``account.retry_interval`` up to
``account.retry_max``, and the PBX never sees a storm. A registrar that is down or unreachable is tried
again every ``retry_interval``, so the phone is back within one interval of it, alternating with
``account.secondary_registrar`` when there is one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

from firmware_app.config import Account
from firmware_app.errors import CommandError
from firmware_app.events import Engine
from firmware_app.model import Registration, RegistrationState

log = logging.getLogger("firmware_app.phone")

#: Answers that mean the credentials are wrong rather than the registrar away.
CREDENTIAL_FAILURES = (401, 403, 407)


class RegistrationKeeper:
    """Follows the engine's registration reports and schedules the next attempt after a failure."""

    def __init__(
        self,
        account: Account,
        engine: Callable[[], Engine],
        loop: Callable[[], asyncio.AbstractEventLoop],
        changed: Callable[[Registration], None],
    ) -> None:
        self.account = account
        self.registration = Registration(RegistrationState.UNREGISTERED)
        self._engine = engine
        self._loop = loop
        self._changed = changed
        self._failures = 0
        self._retry: asyncio.TimerHandle | None = None
        self._waiters: list[asyncio.Future[Registration]] = []
        self._stopped = False

    def set(self, registration: Registration) -> None:
        """Take ``registration`` as the current one and tell whoever listens when it changed."""
        previous, self.registration = self.registration, registration
        if registration != previous:
            self._changed(registration)

    def report(self, registration: Registration) -> None:
        """What the engine reported: log it, schedule a retry after a failure, wake :meth:`wait_unregistered`."""
        account = self.account
        if registration.state is RegistrationState.REGISTERED:
            self._failures = 0
            if self.registration.state is not RegistrationState.REGISTERED:
                log.info("registered as %s (expires %s s)", registration.uri, registration.expires)
        elif registration.state is RegistrationState.FAILED:
            self._failures += 1
            if registration.code in CREDENTIAL_FAILURES:
                delay = min(account.retry_interval * 2 ** (self._failures - 1), account.retry_max)
                hint = " (check the account's user and password)"
            else:
                delay, hint = account.retry_interval, ""
                if account.secondary_registrar:
                    try:
                        hint = f" (next attempt through {self._engine().switch_registrar()})"
                    except CommandError:
                        pass
            log.error(
                "registration failed: %s %s%s; retrying in %s s", registration.code, registration.reason, hint, delay
            )
            self._schedule(delay)
        elif registration.state is RegistrationState.UNREGISTERED:
            log.info("unregistered")
        self.set(registration)
        if registration.state is not RegistrationState.REGISTERED:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(registration)
        self._waiters = [w for w in self._waiters if not w.done()]

    async def unregister(self, timeout: float) -> None:
        """Stop retrying, send the un-REGISTER and wait up to ``timeout`` s for its answer."""
        self.stop()
        waiter = self._loop().create_future()
        self._waiters.append(waiter)
        try:
            if self._engine().unregister():
                await asyncio.wait_for(waiter, timeout)
        except (asyncio.TimeoutError, CommandError) as e:
            log.warning("un-REGISTER was not confirmed: %s", e or f"no answer within {timeout:g} s")

    def stop(self) -> None:
        self._stopped = True
        if self._retry:
            self._retry.cancel()
            self._retry = None

    def _schedule(self, delay: float) -> None:
        if self._stopped:
            return
        if self._retry:
            self._retry.cancel()
        self._retry = self._loop().call_later(delay, self._try_again)

    def _try_again(self) -> None:
        self._retry = None
        if self._stopped:
            return
        try:
            self.set(dataclasses.replace(self.registration, state=RegistrationState.REGISTERING))
            self._engine().register()
        except CommandError as e:
            # e.g. the previous REGISTER is still waiting for its timeout (32 s over UDP): try again later
            log.warning("registration retry not sent: %s; trying again in %s s", e, self.account.retry_interval)
            self._schedule(self.account.retry_interval)
