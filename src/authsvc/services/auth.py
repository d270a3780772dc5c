"""The use cases of the token lifecycle: register, login, refresh, authenticate.

Their transactions are units of work (``services.uow``): each change is committed once,
with its audit event. A refusal is raised after its unit has ended: reuse detection's
revocation is committed before the client sees the 403.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.db import driver_engine
from authsvc.errors import (
    AccountDisabled,
    AuthError,
    InvalidCredentials,
    InvalidRefreshToken,
    InvalidToken,
    RefreshTokenExpired,
    RefreshTokenReused,
    RefreshTokenRevoked,
    RegistrationDisabled,
    TooManyAttempts,
    UsernameTaken,
)
from authsvc.models import User
from authsvc.repositories.login import LoginRepository
from authsvc.repositories.sessions import (
    ConsumedToken,
    SessionHead,
    SessionRepository,
    TokenState,
)
from authsvc.repositories.throttle import ThrottleRepository
from authsvc.repositories.users import UserRepository
from authsvc.security.password_policy import check_password
from authsvc.security.passwords import PasswordHasher
from authsvc.security.tokens import AccessClaims, RefreshClaims, TokenCodec, token_hash
from authsvc.security.usernames import normalize_username
from authsvc.services.audit import to_row
from authsvc.services.events import AuthEvent, EventSink, EventType, Reason
from authsvc.services.throttle import (
    DatabaseThrottle,
    Throttle,
    ThrottleLimits,
    address_key,
)
from authsvc.services.uow import UnitOfWork


@dataclass(frozen=True, slots=True)
class ClientInfo:
    ip_address: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    user_id: uuid.UUID
    session_id: uuid.UUID


class AuthService:
    def __init__(
        self,
        db: AsyncSession,
        *,
        settings: Settings,
        hasher: PasswordHasher,
        codec: TokenCodec,
        events: EventSink | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self._db = db
        self._uow = UnitOfWork(db, events)
        self._throttle = throttle or DatabaseThrottle(db, ThrottleLimits.from_settings(settings))
        self._throttle_rows = ThrottleRepository(db)
        self._settings = settings
        self._hasher = hasher
        self._codec = codec
        self._users = UserRepository(db)
        self._sessions = SessionRepository(db)

    async def register(
        self, *, username: str, password: str, client: ClientInfo, now: datetime
    ) -> User:
        """Self-service sign-up, when ``AUTHSVC_ALLOW_REGISTRATION`` allows it.

        Every attempt counts toward its address's registration limit, whatever its outcome
        (a 409 tells whether a username exists; each attempt costs a hash).
        """
        if not self._settings.clients.allow_registration:
            raise RegistrationDisabled()
        # A place in the hashing queue first: a flood is refused before it costs anything.
        with self._hasher.reservation():
            try:
                await self._throttle.admit_registration(address_key(client.ip_address), now)
            except TooManyAttempts:
                await self._uow.report(
                    AuthEvent(EventType.REGISTRATION_THROTTLED, now, ip_address=client.ip_address)
                )
                raise
            return await self.create_user(username=username, password=password, now=now)

    async def create_user(self, *, username: str, password: str, now: datetime) -> User:
        """Create a user; ``WeakPassword`` or ``UsernameTaken`` (case-folded) otherwise."""
        username = normalize_username(username)
        check_password(
            password, username=username, min_length=self._settings.passwords.password_min_length
        )
        password_hash = await self._hasher.hash(password)
        try:
            async with self._uow.write():
                user = await self._users.add(
                    username=username, password_hash=password_hash, now=now
                )
                self._uow.record(
                    AuthEvent(
                        EventType.USER_REGISTERED, now, user_id=user.id, username=user.username
                    )
                )
        except IntegrityError:
            raise UsernameTaken() from None
        return user

    async def login(
        self, *, username: str, password: str, client: ClientInfo, now: datetime
    ) -> IssuedTokens:
        """Check the password and start a session with its first refresh token.

        The attempt is counted before the password is checked (``services.throttle``); a
        wrong password leaves it counted, a right one gives it back.
        """
        # A place in the hashing queue first: a flood is refused (503) before it costs a
        # count or a database round trip.
        with self._hasher.reservation():
            return await self._login(username=username, password=password, client=client, now=now)

    async def _login(
        self, *, username: str, password: str, client: ClientInfo, now: datetime
    ) -> IssuedTokens:
        username = normalize_username(username)
        address = address_key(client.ip_address)
        event = AuthEvent(
            EventType.LOGIN_FAILED,
            now,
            username=username,
            ip_address=client.ip_address,
            user_agent=client.user_agent,
        )
        digests = self._codec.address_digests(address)
        if driver_engine(self._db) is not None:
            return await self._login_through_driver(
                username=username,
                password=password,
                client=client,
                now=now,
                event=event,
                address=address,
                digests=digests,
            )
        found: tuple[uuid.UUID, str, datetime | None] | None = None
        try:
            async with self._uow.read():
                user = await self._users.get_by_username(username)
                found = (user.id, user.password_hash, user.disabled_at) if user else None
                # Asked for unknown usernames too, so both cost the same queries.
                known = await self._known_address(username, digests, now)
                # An attack that goes on is refused here, at the cost of this read only.
                await self._throttle.check_login(username, address, now, check_account=not known)
            # No connection (or SQLite lock) is held while the attempt is counted and the
            # password hashed.
            ticket = await self._throttle.admit_login(
                username, address, now, check_account=not known
            )
        except TooManyAttempts:
            await self._uow.report(
                replace(event, type=EventType.LOGIN_THROTTLED, user_id=found[0] if found else None)
            )
            raise
        (user_id, _, disabled_at), new_hash = await self._check_password(found, password, event)
        tokens: IssuedTokens | None = None
        async with self._uow.write():
            # The account may have been disabled while the password was being hashed: check
            # again under a row lock.
            if disabled_at is None and await self._users.lock_if_enabled(user_id):
                if new_hash is not None:
                    await self._users.set_password_hash(user_id, new_hash)
                await self._throttle.give_back_login(ticket, succeeded=True)
                if self._settings.throttle.login_known_address_days > 0:
                    await self._throttle_rows.remember_address(
                        user_id=user_id, digest=digests[0], now=now
                    )
                tokens = await self._start_session(user_id, client, now)
                self._uow.record(
                    replace(
                        event,
                        type=EventType.LOGIN_SUCCEEDED,
                        user_id=user_id,
                        session_id=tokens.session_id,
                    )
                )
            else:
                # A right password: the attempt does not count against anyone.
                await self._throttle.give_back_login(ticket, succeeded=False)
                self._uow.record(replace(event, type=EventType.LOGIN_DISABLED, user_id=user_id))
        if tokens is None:
            raise AccountDisabled()
        return tokens

    async def _login_through_driver(
        self,
        *,
        username: str,
        password: str,
        client: ClientInfo,
        now: datetime,
        event: AuthEvent,
        address: str,
        digests: list[str],
    ) -> IssuedTokens:
        """``_login`` on PostgreSQL in few statements through the driver
        (``repositories.login``), each in autocommit; the same outcomes and events.

        With the database's throttle: one statement reads the user, the known address and
        the windows and, when none is full, commits the attempt's row; a second counts
        (``DatabaseThrottle.admit_counted_login``); after a right password a third changes
        everything at once, with the audit row. A wrong password's event is reported as on
        the general path.
        """
        days = self._settings.throttle.login_known_address_days
        rows = LoginRepository(self._db)
        database_throttle = self._throttle if isinstance(self._throttle, DatabaseThrottle) else None
        found: tuple[uuid.UUID, str, datetime | None] | None = None
        try:
            start = await rows.start(
                username=username,
                address=address,
                digests=digests if days > 0 else [],
                known_since=now - timedelta(days=days) if days > 0 else None,
                windows=database_throttle.login_windows(now) if database_throttle else [],
                now=now,
            )
            found = start.user
            if database_throttle is not None:
                # A full window: refused at the cost of that read, nothing written.
                database_throttle.refuse_login(now, start.blockers)
                assert start.attempt_id is not None
                ticket = await database_throttle.admit_counted_login(
                    username, address, now, start.attempt_id, check_account=not start.known
                )
            else:
                await self._throttle.check_login(
                    username, address, now, check_account=not start.known
                )
                ticket = await self._throttle.admit_login(
                    username, address, now, check_account=not start.known
                )
        except TooManyAttempts:
            await self._uow.report(
                replace(event, type=EventType.LOGIN_THROTTLED, user_id=found[0] if found else None)
            )
            raise
        (user_id, _, disabled_at), new_hash = await self._check_password(found, password, event)
        session_id = uuid.uuid4()
        cap, claims = self._first_refresh_claims(user_id, session_id, now)
        refresh = self._codec.issue_refresh_token(claims)
        succeeded = replace(
            event, type=EventType.LOGIN_SUCCEEDED, user_id=user_id, session_id=session_id
        )
        started = await rows.finish(
            user_id=user_id,
            enabled=disabled_at is None,
            new_hash=new_hash,
            attempt_id=int(ticket.ref) if database_throttle is not None else None,
            username=username,
            remember_digest=digests[0] if days > 0 else None,
            now=now,
            session_id=session_id,
            session_expires_at=cap,
            user_agent=client.user_agent,
            ip_address=client.ip_address,
            token_hash=token_hash(refresh),
            token_expires_at=_from_ts(claims.exp),
            audit=to_row(succeeded),
            disabled_event=str(EventType.LOGIN_DISABLED),
        )
        if database_throttle is None:
            # Redis: after the commit (a right password does not count either way).
            await self._throttle.give_back_login(ticket, succeeded=started)
        if not started:
            await self._uow.announce(replace(event, type=EventType.LOGIN_DISABLED, user_id=user_id))
            raise AccountDisabled()
        await self._uow.announce(succeeded)  # its audit row went with the login
        return self._pair(user_id, session_id, refresh, claims.exp, now)

    def _first_refresh_claims(
        self, user_id: uuid.UUID, session_id: uuid.UUID, now: datetime
    ) -> tuple[datetime, RefreshClaims]:
        """A new session's cap and its first refresh token's claims."""
        cap = now + timedelta(seconds=self._settings.tokens.session_max_lifetime_seconds)
        iat = int(now.timestamp())
        return cap, RefreshClaims(
            sub=str(user_id),
            sid=str(session_id),
            jti=self._codec.new_refresh_jti(),
            iat=iat,
            exp=min(iat + self._settings.tokens.refresh_token_ttl_seconds, int(cap.timestamp())),
        )

    async def _check_password(
        self,
        found: tuple[uuid.UUID, str, datetime | None] | None,
        password: str,
        event: AuthEvent,
    ) -> tuple[tuple[uuid.UUID, str, datetime | None], str | None]:
        """Verify ``password`` against the user ``found`` (a dummy hash when there is none, at
        the same cost): the user, and a new hash when the parameters changed. A failure is
        reported and raised as ``InvalidCredentials``; its attempt stays counted: it is the
        failure's record.
        """
        if found is None:
            await self._hasher.dummy_verify(password)
            valid, new_hash = False, None
        else:
            valid, new_hash = await self._hasher.verify_and_update(password, found[1])
        if found is None or not valid:
            await self._uow.report(
                replace(event, reason=Reason.UNKNOWN_USER)
                if found is None
                else replace(event, user_id=found[0], reason=Reason.WRONG_PASSWORD)
            )
            raise InvalidCredentials()
        return found, new_hash

    async def _known_address(self, username: str, digests: list[str], now: datetime) -> bool:
        days = self._settings.throttle.login_known_address_days
        if days <= 0:
            return False
        return await self._throttle_rows.is_known_address(
            username=username, digests=digests, since=now - timedelta(days=days)
        )

    async def _start_session(
        self, user_id: uuid.UUID, client: ClientInfo, now: datetime
    ) -> IssuedTokens:
        session_id = uuid.uuid4()
        cap, claims = self._first_refresh_claims(user_id, session_id, now)
        session = await self._sessions.create(
            session_id=session_id,
            user_id=user_id,
            now=now,
            expires_at=cap,
            user_agent=client.user_agent,
            ip_address=client.ip_address,
        )
        refresh = self._codec.issue_refresh_token(claims)
        await self._sessions.add_token(
            session_id=session.id,
            token_hash=token_hash(refresh),
            issued_at=now,
            expires_at=_from_ts(claims.exp),
        )
        return self._pair(user_id, session.id, refresh, claims.exp, now)

    async def refresh(
        self, *, refresh_token: str, client: ClientInfo, now: datetime
    ) -> IssuedTokens:
        """Rotate: consume the presented token and issue its successor, in one transaction."""
        try:
            presented = self._codec.decode_refresh_token(refresh_token)
        except InvalidRefreshToken:
            await self._uow.report(
                AuthEvent(EventType.REFRESH_INVALID, now, ip_address=client.ip_address)
            )
            raise
        presented_hash = token_hash(refresh_token)
        tokens = await self._rotate_in_one_statement(presented, presented_hash, client, now)
        if tokens is not None:
            return tokens
        try:
            async with self._uow.write():
                consumed = await self._sessions.consume_active(presented_hash, now)
                if consumed is not None:
                    return await self._rotate(consumed, client, now)
                outcome = await self._refuse_or_replay(presented_hash, client, now)
        except _SessionEnded:
            # The session was revoked or capped: the consumption went with its unit. Say why.
            async with self._uow.write():
                outcome = await self._refuse_or_replay(presented_hash, client, now)
        if isinstance(outcome, AuthError):
            raise outcome
        return outcome

    async def _rotate(
        self, consumed: ConsumedToken, client: ClientInfo, now: datetime
    ) -> IssuedTokens:
        head = await self._sessions.touch_active(
            consumed.session_id, now, ip_address=client.ip_address
        )
        if head is None:
            raise _SessionEnded()
        claims = self._successor_claims(consumed.token_hash, consumed_at=now, head=head)
        successor = self._codec.issue_refresh_token(claims)
        await self._sessions.add_token(
            session_id=head.id,
            token_hash=token_hash(successor),
            issued_at=now,
            expires_at=_from_ts(claims.exp),
            parent_id=consumed.id,
        )
        self._uow.record(
            AuthEvent(
                EventType.REFRESH_ROTATED,
                now,
                user_id=head.user_id,
                session_id=head.id,
                ip_address=client.ip_address,
                user_agent=client.user_agent,
            )
        )
        return self._pair(head.user_id, head.id, successor, claims.exp, now)

    async def _rotate_in_one_statement(
        self, presented: RefreshClaims, presented_hash: str, client: ClientInfo, now: datetime
    ) -> IssuedTokens | None:
        """The common rotation on PostgreSQL, in one statement (``SessionRepository.rotate``).

        The successor is the one the general path would issue: it is derived from the
        consumed token's hash, the session and the time, all known before the statement, as
        long as the session's cap does not cut its expiry (the statement checks that). ``None``
        when the statement changed nothing (the token is not live, the session ended or its
        cap is near): the general path then rotates, replays or refuses, and says why.
        """
        try:
            user_id, session_id = uuid.UUID(presented.sub), uuid.UUID(presented.sid)
        except ValueError:
            return None
        iat = int(now.timestamp())
        claims = RefreshClaims(
            sub=str(user_id),
            sid=str(session_id),
            jti=self._codec.successor_jti(presented_hash),
            iat=iat,
            exp=iat + self._settings.tokens.refresh_token_ttl_seconds,
        )
        if driver_engine(self._db) is None:
            return None
        successor = self._codec.issue_refresh_token(claims)
        event = AuthEvent(
            EventType.REFRESH_ROTATED,
            now,
            user_id=user_id,
            session_id=session_id,
            ip_address=client.ip_address,
            user_agent=client.user_agent,
        )
        rotated = await self._sessions.rotate(
            token_hash=presented_hash,
            session_id=session_id,
            user_id=user_id,
            now=now,
            ip_address=client.ip_address,
            successor_hash=token_hash(successor),
            successor_expires_at=_from_ts(claims.exp),
            audit=to_row(event),
        )
        if not rotated:
            return None
        await self._uow.announce(event)  # its audit row went with the rotation
        return self._pair(user_id, session_id, successor, claims.exp, now)

    async def _refuse_or_replay(
        self, presented_hash: str, client: ClientInfo, now: datetime
    ) -> IssuedTokens | AuthError:
        """In the refresh's unit: a grace retry's tokens, or the error to raise once the unit
        has committed (with the event, and reuse detection's revocation)."""
        state = await self._sessions.token_state(presented_hash)
        if state is None:
            self._uow.record(
                AuthEvent(EventType.REFRESH_INVALID, now, ip_address=client.ip_address)
            )
            return InvalidRefreshToken()
        event = AuthEvent(
            EventType.REFRESH_INVALID,
            now,
            user_id=state.user_id,
            session_id=state.session_id,
            ip_address=client.ip_address,
            user_agent=client.user_agent,
        )
        if state.consumed_at is not None:
            replay = await self._grace_replay(state, now)
            if replay is not None:
                self._uow.record(replace(event, type=EventType.REFRESH_GRACE))
                return replay
            # RFC 9700 §4.14.2: a rotated token came back, so one of its holders is an
            # attacker; revoke the whole session (committed before the client sees the 403).
            revoked = await self._sessions.revoke(state.session_id, now, "reuse_detected")
            self._uow.record(
                replace(event, type=EventType.REFRESH_REUSED, sessions_revoked=int(revoked))
            )
            return RefreshTokenReused()
        if state.session_revoked_at is not None or state.user_disabled_at is not None:
            self._uow.record(replace(event, type=EventType.REFRESH_REVOKED))
            return RefreshTokenRevoked()
        if state.token_expires_at <= now or state.session_expires_at <= now:
            self._uow.record(replace(event, type=EventType.REFRESH_EXPIRED))
            return RefreshTokenExpired()
        self._uow.record(event)
        return InvalidRefreshToken()

    async def _grace_replay(self, state: TokenState, now: datetime) -> IssuedTokens | None:
        """The successor a benign retry gets again, or ``None`` when it is not one.

        Within the grace window, the immediate predecessor of the session's newest token
        gets that same newest token back. It is derived again from the consumed row (its
        hash and consumption time) under the refresh key; the stored successor hash
        confirms the derivation. Nothing is written.
        """
        grace = self._settings.tokens.refresh_reuse_grace_seconds
        assert state.consumed_at is not None
        if (
            grace <= 0
            or now - state.consumed_at > timedelta(seconds=grace)
            or state.session_revoked_at is not None
            or state.user_disabled_at is not None
            or state.session_expires_at <= now
        ):
            return None
        successor = await self._sessions.live_successor(
            state.token_id, now, session_id=state.session_id
        )
        if successor is None:
            return None
        head = SessionHead(state.session_id, state.user_id, state.session_expires_at)
        # The successor was signed under whichever key was current then: after a key
        # rotation (a restart) that may be a previous one.
        for kid in self._codec.refresh_kids:
            claims = self._successor_claims(
                state.token_hash, consumed_at=state.consumed_at, head=head, kid=kid
            )
            token = self._codec.issue_refresh_token(claims, kid)
            if hmac.compare_digest(token_hash(token), successor.token_hash):
                return self._pair(state.user_id, state.session_id, token, claims.exp, now)
        return None

    def _successor_claims(
        self,
        consumed_hash: str,
        *,
        consumed_at: datetime,
        head: SessionHead,
        kid: str | None = None,
    ) -> RefreshClaims:
        iat = int(consumed_at.timestamp())
        return RefreshClaims(
            sub=str(head.user_id),
            sid=str(head.id),
            jti=self._codec.successor_jti(consumed_hash, kid),
            iat=iat,
            exp=min(
                iat + self._settings.tokens.refresh_token_ttl_seconds,
                int(head.expires_at.timestamp()),
            ),
        )

    def _pair(
        self,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        refresh: str,
        refresh_exp: int,
        now: datetime,
    ) -> IssuedTokens:
        access, access_exp = self._codec.issue_access_token(
            user_id=str(user_id), session_id=str(session_id), now=now
        )
        ts = int(now.timestamp())
        return IssuedTokens(
            access_token=access,
            refresh_token=refresh,
            expires_in=max(0, access_exp - ts),
            refresh_expires_in=max(0, refresh_exp - ts),
            user_id=user_id,
            session_id=session_id,
        )

    async def authenticate(self, claims: AccessClaims, now: datetime) -> User:
        """The live user behind a verified access token: enabled, session not revoked."""
        return await authenticate(self._db, claims, now)


async def authenticate(db: AsyncSession, claims: AccessClaims, now: datetime) -> User:
    """``AuthService.authenticate`` without building the service: the bearer check of every
    protected request needs none of its throttle, hasher or unit-of-work parts."""
    try:
        user_id, session_id = uuid.UUID(claims.sub), uuid.UUID(claims.sid)
    except ValueError:
        raise InvalidToken() from None
    sessions = SessionRepository(db)
    # One statement (the session joined to its user by primary key): on PostgreSQL through
    # the driver in autocommit, no transaction round trips; elsewhere a read unit of its
    # own (a route that goes on to write starts a write unit; on SQLite, upgrading this
    # read snapshot to a writer after another commit would fail at once with "database is
    # locked").
    if driver_engine(db) is not None:
        user = await sessions.active_user(session_id=session_id, user_id=user_id, now=now)
    else:
        async with UnitOfWork(db).read():
            user = await sessions.active_user(session_id=session_id, user_id=user_id, now=now)
    if user is None:
        raise InvalidToken()
    return user


class _SessionEnded(Exception):
    """Raised in a rotation's unit to undo it: the token's session ended meanwhile."""


def _from_ts(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
