"""ORM tables."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    Uuid,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from authsvc.db import Base, UTCDateTime

# A 64-bit key on PostgreSQL, SQLite's rowid alias there.
BigIntPK = BigInteger().with_variant(Integer, "sqlite")


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # Stored lower-cased: usernames are case-insensitive everywhere.
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class AuthSession(Base):
    """One login: the chain of refresh tokens that rotation grows from it."""

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The absolute cap: no token of this session is valid after it.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(512), default=None)
    ip_address: Mapped[str | None] = mapped_column(String(64), default=None)


class RefreshToken(Base):
    """One link of a session's chain, identified by the SHA-256 of the token, never the token."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The token this one replaced (None for the token a login issued).
    parent_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None, index=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Set when rotated; the row stays as evidence for reuse detection until the session's cap.
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class LoginFailure(Base):
    """A login attempt the throttle counts: in flight (its password not yet checked) or failed.

    Inserted and committed before the password is checked; a success, or an attempt that
    was refused, deletes its row again. Kept while any throttle window can still count it.
    """

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_username_ip_address_at", "username", "ip_address", "attempted_at"),
        Index("ix_login_failures_ip_address_at", "ip_address", "attempted_at"),
        Index("ix_login_failures_username_at", "username", "attempted_at"),
        Index("ix_login_failures_attempted_at", "attempted_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64))
    ip_address: Mapped[str] = mapped_column(String(64))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # ip_address is the client's throttle key: an IPv4 address, or an IPv6 /64 prefix.
    # Still counts toward the account's consecutive-failure cap; a successful login clears it
    # for every row of the username (the per-address windows are unaffected).
    counts_for_account: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())


class RegistrationAttempt(Base):
    """A registration attempt, whatever its outcome, for the per-address registration limit."""

    __tablename__ = "registration_attempts"
    __table_args__ = (
        Index("ix_registration_attempts_ip_address_at", "ip_address", "attempted_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    # The client's throttle key: an IPv4 address, or an IPv6 /64 prefix.
    ip_address: Mapped[str] = mapped_column(String(64))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class KnownAddress(Base):
    """An address (IPv6: its /64) a user logged in from successfully, and when it last did.

    Only a keyed hash of the address is stored (HMAC under a key derived from the signing
    key), so the table does not say where users log in from.
    """

    __tablename__ = "known_addresses"
    __table_args__ = (UniqueConstraint("user_id", "address_digest"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    address_digest: Mapped[str] = mapped_column(String(64))
    last_login_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class AuditEvent(Base):
    """Append-only record of authentication events; never holds a token or password."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    event: Mapped[str] = mapped_column(String(40), index=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None, index=True)
    username: Mapped[str | None] = mapped_column(String(64), default=None)
    session_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    ip_address: Mapped[str | None] = mapped_column(String(64), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(512), default=None)
    detail: Mapped[str | None] = mapped_column(String(255), default=None)
