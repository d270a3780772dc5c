"""argon2id in memory that the caller provides: a hashing slot's shared region.

argon2 allocates ``memory_cost`` KiB for each run, and glibc keeps the buffer of each thread
that hashed. The workers of one ``authsvc serve --workers N`` take turns on as many hashing
slots as there are cores (``passwords.MachineSlots``) but each from its own threads, so
every slot's hashes ran in up to ``N x concurrency`` different buffers: measured here, a hash
cost about a tenth more CPU that way than in one buffer per slot (docs/deployment.md,
*Benchmark figures*). So a slot owns its memory, a file on tmpfs that every worker maps, and
whichever thread holds the slot runs argon2 in it (libargon2's ``allocate_cbk``). libargon2
wipes the memory before it hands it back, as it does its own.

The hashes are argon2-cffi's: ``argon2_ctx`` of the same library with the same parameters,
checked against ``argon2.PasswordHasher`` in tests/unit/test_passwords.py. A hash in any
other format than the service's own, or a failure of the library, returns ``None`` here and
the caller uses argon2-cffi's own functions instead.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import mmap
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2.low_level import ARGON2_VERSION, Type, core, ffi

# libargon2's ARGON2_MEMORY_ALLOCATION_ERROR: argon2_ctx fails rather than overrun a region.
_ALLOCATION_ERROR = -22
# The service's own format (argon2-cffi's): argon2id, version 19, salt and digest present.
_ENCODED = re.compile(
    r"\$argon2id\$v=19\$m=([0-9]{1,10}),t=([0-9]{1,10}),p=([0-9]{1,3})"
    r"\$([A-Za-z0-9+/]{11,1024})\$([A-Za-z0-9+/]{6,1024})"
)


@dataclass(frozen=True)
class Region:
    """A shared mapping of ``size`` bytes, used by one argon2 run at a time (its slot's)."""

    size: int
    pointer: Any  # cdata uint8_t *
    keep: tuple[Any, ...]  # the mmap and cffi's view of it, alive as long as the pointer

    @classmethod
    def open(cls, path: Path, size: int) -> Region:
        """Map ``path`` (created, grown to ``size`` with its pages allocated: a full tmpfs
        fails here with ``OSError``, never later with SIGBUS in the middle of a hash)."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.posix_fallocate(fd, 0, size)
            mapping = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        view = ffi.from_buffer(mapping)
        return cls(size, ffi.cast("uint8_t *", view), (mapping, view))


_current = threading.local()


def _allocate(memory: Any, size: int) -> int:
    region: Region | None = getattr(_current, "region", None)
    if region is None or size > region.size:
        return _ALLOCATION_ERROR
    memory[0] = region.pointer
    return 0


def _release(memory: Any, size: int) -> None:
    """Nothing to free: the region stays mapped for the slot's next run."""


def _callbacks() -> tuple[Any, Any] | None:
    # libffi closures; a system that forbids them (no writable+executable memory) hashes
    # with argon2-cffi's own allocation instead.
    try:
        return (
            ffi.callback("int(uint8_t **, size_t)", _allocate, error=_ALLOCATION_ERROR),
            ffi.callback("void(uint8_t *, size_t)", _release),
        )
    except (MemoryError, RuntimeError, TypeError):  # pragma: no cover - such systems only
        return None


_CALLBACKS = _callbacks()


def available() -> bool:
    return _CALLBACKS is not None


@dataclass(frozen=True)
class Parameters:
    memory_cost: int  # KiB
    time_cost: int
    parallelism: int


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def parse(encoded: str) -> tuple[Parameters, bytes, bytes] | None:
    """The parameters, salt and digest of a hash in the service's format; ``None`` else."""
    match = _ENCODED.fullmatch(encoded)
    if match is None:
        return None
    try:
        salt, digest = _b64decode(match[4]), _b64decode(match[5])
    except (binascii.Error, ValueError):
        return None
    return Parameters(int(match[1]), int(match[2]), int(match[3])), salt, digest


def raw_hash(
    region: Region, secret: bytes, salt: bytes, params: Parameters, length: int
) -> bytes | None:
    """argon2id of ``secret`` with ``salt`` in ``region``; ``None`` when the library refuses
    (parameters out of its bounds, or a region too small for them)."""
    if _CALLBACKS is None:
        return None
    allocate, release = _CALLBACKS
    out = ffi.new("uint8_t[]", length)
    secret_buffer = ffi.new("uint8_t[]", secret)
    salt_buffer = ffi.new("uint8_t[]", salt)
    context = ffi.new(
        "argon2_context *",
        {
            "out": out,
            "outlen": length,
            "pwd": secret_buffer,
            "pwdlen": len(secret),
            "salt": salt_buffer,
            "saltlen": len(salt),
            "secret": ffi.NULL,
            "secretlen": 0,
            "ad": ffi.NULL,
            "adlen": 0,
            "t_cost": params.time_cost,
            "m_cost": params.memory_cost,
            "lanes": params.parallelism,
            "threads": params.parallelism,
            "version": ARGON2_VERSION,
            "allocate_cbk": allocate,
            "free_cbk": release,
            "flags": 0,  # ARGON2_DEFAULT_FLAGS, as argon2-cffi passes
        },
    )
    _current.region = region
    try:
        status = core(context, Type.ID.value)
    finally:
        _current.region = None
    if status != 0:
        return None
    return bytes(ffi.buffer(out, length))


def verify(region: Region, password: str, encoded: str) -> bool | None:
    """Whether ``password`` matches ``encoded`` (compared in constant time); ``None`` when
    ``encoded`` is not in the service's format or the library refused."""
    parsed = parse(encoded)
    if parsed is None:
        return None
    params, salt, digest = parsed
    computed = raw_hash(region, password.encode("utf-8"), salt, params, len(digest))
    if computed is None:
        return None
    return hmac.compare_digest(computed, digest)


def hash_password(
    region: Region, password: str, params: Parameters, *, hash_len: int, salt_len: int
) -> str | None:
    """A new hash of ``password`` in argon2-cffi's encoding, with a fresh random salt."""
    salt = os.urandom(salt_len)
    digest = raw_hash(region, password.encode("utf-8"), salt, params, hash_len)
    if digest is None:
        return None
    return (
        f"$argon2id$v={ARGON2_VERSION}$m={params.memory_cost},t={params.time_cost},"
        f"p={params.parallelism}${_b64encode(salt)}${_b64encode(digest)}"
    )


def on_tmpfs(path: Path) -> bool:
    """Whether ``path`` lies on a tmpfs mount (memory, not a disk the pages get written to)."""
    target = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, fields[2]
    except OSError:
        return False
    return kind == "tmpfs"
