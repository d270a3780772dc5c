"""What the abuse limits count and remember: login attempts, registration attempts, and the
addresses each account logged in from. Adds, reads and deletes; never commits."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import ColumnElement, delete, exists, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.db import DriverStatement, driver_connection, driver_engine
from authsvc.models import KnownAddress, LoginFailure, RegistrationAttempt, User


class LoginWindow(StrEnum):
    """The login limits, by what their window counts."""

    PAIR = "pair"  # one username from one address
    ADDRESS = "address"  # one address, all usernames
    ACCOUNT = "account"  # one username, all addresses (until a success ends the run)


def _as_utc(value: datetime | None) -> datetime | None:
    # A scalar subquery's column comes back untyped on SQLite (naive text, not UTCDateTime).
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ThrottleRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    # -- login attempts -------------------------------------------------------------------

    async def add_login_attempt(self, *, username: str, address: str, now: datetime) -> int:
        """Stage an attempt row; its id."""
        row = LoginFailure(username=username, ip_address=address, attempted_at=now)
        self._session.add(row)
        await self._session.flush()
        return row.id

    async def login_blockers(
        self,
        windows: Sequence[tuple[LoginWindow, datetime, int]],
        *,
        username: str,
        address: str,
        own_id: int | None = None,
    ) -> list[datetime | None]:
        """For each ``(window, since, limit)``: when the ``limit``-th most recent attempt in
        the window (made after ``since``) other than ``own_id`` was made, or ``None`` when
        fewer than ``limit`` others fall in it (there is room for ``own_id``, or for one
        more). Once that attempt ages out, there is room again. One statement for all.
        """
        conditions: dict[LoginWindow, list[ColumnElement[bool]]] = {
            LoginWindow.PAIR: [
                LoginFailure.username == username,
                LoginFailure.ip_address == address,
            ],
            LoginWindow.ADDRESS: [LoginFailure.ip_address == address],
            LoginWindow.ACCOUNT: [
                LoginFailure.username == username,
                LoginFailure.counts_for_account.is_(True),
            ],
        }
        others = [] if own_id is None else [LoginFailure.id != own_id]
        blockers = [
            select(LoginFailure.attempted_at)
            .where(*conditions[window], *others, LoginFailure.attempted_at > since)
            .order_by(LoginFailure.attempted_at.desc())
            .offset(limit - 1)
            .limit(1)
            .scalar_subquery()
            for window, since, limit in windows
        ]
        row = (await self._session.execute(select(*blockers))).one()
        return [_as_utc(value) for value in row]

    async def remove_login_attempt(self, attempt_id: int) -> None:
        await self._session.execute(delete(LoginFailure).where(LoginFailure.id == attempt_id))

    async def end_account_run(self, username: str) -> None:
        """A correct password: no earlier attempt counts toward the account cap any more."""
        await self._session.execute(
            update(LoginFailure)
            .where(LoginFailure.username == username, LoginFailure.counts_for_account.is_(True))
            .values(counts_for_account=False)
        )

    async def count_login_attempt(
        self,
        attempt_id: int,
        windows: Sequence[tuple[LoginWindow, datetime, int]],
        *,
        username: str,
        address: str,
        check_account: bool,
    ) -> list[datetime | None]:
        """PostgreSQL through the driver (``db.driver_engine``), in autocommit: the blockers
        of the three windows (pair, address, account; ``None`` where ``check_account`` is
        false) other than ``attempt_id``, read in a statement begun after that attempt's row
        was committed. When one blocks, the attempt's row is deleted in the same statement.
        """
        engine = driver_engine(self._session)
        if engine is None:
            raise RuntimeError("count_login_attempt needs db.driver_engine")
        params = {
            **window_params(windows),
            "username": username,
            "address": address,
            "attempt_id": attempt_id,
            "check_account": check_account,
        }
        async with driver_connection(engine) as connection:
            row = await connection.fetchrow(
                _COUNT_LOGIN_ATTEMPT.sql, *_COUNT_LOGIN_ATTEMPT.args(params)
            )
        return [_as_utc(row[0]), _as_utc(row[1]), _as_utc(row[2])]

    # -- registration attempts ------------------------------------------------------------

    async def add_registration_attempt(self, *, address: str, now: datetime) -> int:
        row = RegistrationAttempt(ip_address=address, attempted_at=now)
        self._session.add(row)
        await self._session.flush()
        return row.id

    async def registration_blocker(
        self, *, address: str, since: datetime, limit: int, own_id: int
    ) -> datetime | None:
        """As ``login_blocker``, for registration attempts from ``address``."""
        return await self._session.scalar(
            select(RegistrationAttempt.attempted_at)
            .where(
                RegistrationAttempt.ip_address == address,
                RegistrationAttempt.attempted_at > since,
                RegistrationAttempt.id != own_id,
            )
            .order_by(RegistrationAttempt.attempted_at.desc())
            .offset(limit - 1)
            .limit(1)
        )

    async def remove_registration_attempt(self, attempt_id: int) -> None:
        await self._session.execute(
            delete(RegistrationAttempt).where(RegistrationAttempt.id == attempt_id)
        )

    # -- known addresses ------------------------------------------------------------------

    async def is_known_address(
        self, *, username: str, digests: Sequence[str], since: datetime
    ) -> bool:
        """Whether ``username`` logged in after ``since`` from an address with one of these
        digests (one per signing key that may have made it)."""
        if not digests:
            return False
        query = select(
            exists().where(
                KnownAddress.user_id == User.id,
                User.username == username,
                KnownAddress.address_digest.in_(digests),
                KnownAddress.last_login_at > since,
            )
        )
        return bool(await self._session.scalar(query))

    async def remember_address(self, *, user_id: uuid.UUID, digest: str, now: datetime) -> None:
        """Insert or refresh the row of this user and address."""
        values = {"user_id": user_id, "address_digest": digest, "last_login_at": now}
        dialect = self._session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        statement = insert(KnownAddress).values(**values)
        await self._session.execute(
            statement.on_conflict_do_update(
                index_elements=[KnownAddress.user_id, KnownAddress.address_digest],
                set_={"last_login_at": statement.excluded.last_login_at},
            )
        )


# -- through the driver (PostgreSQL; ``repositories.login``) ----------------------------------


# The select list of the three login windows' blockers (pair, address, account), as
# ``login_blockers`` finds them, other than the attempt ``:attempt_id`` (``NULL``: none); the
# account's only where the statement's ``checked`` CTE says so. Each ``:<window>_offset`` is
# its limit less one (``window_params``).
LOGIN_BLOCKERS_SQL = """
    (SELECT attempted_at FROM login_failures
     WHERE username = :username AND ip_address = :address AND attempted_at > :pair_since
       AND id IS DISTINCT FROM :attempt_id
     ORDER BY attempted_at DESC OFFSET :pair_offset LIMIT 1) AS pair,
    (SELECT attempted_at FROM login_failures
     WHERE ip_address = :address AND attempted_at > :address_since
       AND id IS DISTINCT FROM :attempt_id
     ORDER BY attempted_at DESC OFFSET :address_offset LIMIT 1) AS address,
    CASE WHEN (SELECT check_account FROM checked) THEN
    (SELECT attempted_at FROM login_failures
     WHERE username = :username AND counts_for_account AND attempted_at > :account_since
       AND id IS DISTINCT FROM :attempt_id
     ORDER BY attempted_at DESC OFFSET :account_offset LIMIT 1) END AS account"""


def window_params(windows: Sequence[tuple[LoginWindow, datetime, int]]) -> dict[str, object]:
    """The parameters of ``LOGIN_BLOCKERS_SQL`` for ``(window, since, limit)``; a window not given
    counts nothing."""
    params: dict[str, object] = {}
    for window in LoginWindow:
        params[f"{window}_since"] = None
        params[f"{window}_offset"] = 0
    for window, since, limit in windows:
        params[f"{window}_since"] = since
        params[f"{window}_offset"] = limit - 1
    return params


_CHECKED_AS_GIVEN = """
WITH checked AS (
    SELECT CAST(:check_account AS boolean) AS check_account
), blockers AS (
    SELECT"""
_REFUSED_DELETED = """
), refused AS (
    DELETE FROM login_failures WHERE id = :attempt_id
      AND EXISTS (
        SELECT 1 FROM blockers
        WHERE pair IS NOT NULL OR address IS NOT NULL OR account IS NOT NULL
      )
)
SELECT pair, address, account FROM blockers"""
_COUNT_LOGIN_ATTEMPT = DriverStatement(_CHECKED_AS_GIVEN + LOGIN_BLOCKERS_SQL + _REFUSED_DELETED)
