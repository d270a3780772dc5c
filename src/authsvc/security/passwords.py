"""argon2id password hashing that never runs on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from pathlib import Path
from typing import TypeVar

import anyio
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from authsvc.errors import HashingBusy
from authsvc.security import argon2_memory

# Hashed once at start-up with the live parameters; verified against for unknown users so
# that "no such user" costs the same time as "wrong password" (no user enumeration).
_DUMMY_PASSWORD = "authsvc-dummy-password-for-timing"  # noqa: S105 - not a credential

T = TypeVar("T")
# argon2-cffi's defaults, which pwdlib's Argon2Hasher keeps: the hashes' lengths in bytes.
HASH_LEN = 32
SALT_LEN = 16
# The hashing threads' nice value (Linux: per thread). Hashing is the work that may wait:
# when a core is contended, the event loops (every other request) get it first, and the
# hashes still take every cycle nobody else wants.
HASH_THREAD_NICE = 19
# Called with ("hash" | "verify", seconds) after each argon2 run, from the worker thread.
HashObserver = Callable[[str, float], None]
# The hasher whose place the running request holds (``PasswordHasher.reservation``).
_reserved: ContextVar[PasswordHasher | None] = ContextVar("authsvc_hash_place", default=None)


class PasswordHasher:
    """argon2id through pwdlib, run in its own ``concurrency`` threads behind a limiter.

    Each hash holds ``memory_cost`` KiB while it runs, so the limiter bounds both CPU
    and memory; requests beyond it wait their turn instead of freezing the event loop.
    At most ``queue_max`` wait (``None``: no bound): one more is refused at once with
    ``HashingBusy`` (503), so a flood gets quick refusals instead of a queue that grows
    without bound while every waiting request holds its connection and body.

    The threads are this hasher's own and live as long as it does. glibc keeps a freed
    argon2 buffer in the malloc arena of the thread that used it, so hashing in whichever
    thread of a shared pool happens to be free grows a process by about ``memory_cost`` for
    every thread that ever hashed; with the same few threads it stays at ``concurrency`` x
    ``memory_cost`` (bench/memory.py, docs/deployment.md "Kubernetes").
    """

    def __init__(
        self,
        *,
        memory_cost: int = 19456,
        time_cost: int = 2,
        parallelism: int = 1,
        concurrency: int = 2,
        queue_max: int | None = None,
        observe: HashObserver | None = None,
        machine_slots: MachineSlots | None = None,
    ) -> None:
        self._argon2 = Argon2Hasher(
            memory_cost=memory_cost, time_cost=time_cost, parallelism=parallelism
        )
        self._hash = PasswordHash((self._argon2,))
        self._params = argon2_memory.Parameters(memory_cost, time_cost, parallelism)
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._threads = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="argon2", initializer=_lower_priority
        )
        # Requests holding a place: hashing, waiting for a slot, or about to hash (see
        # ``reservation``). The event loop is the only writer.
        self._admitted = 0
        self._max_admitted = None if queue_max is None else concurrency + queue_max
        self._dummy_hash: str | None = None
        self._observe = observe
        self._slots = machine_slots

    def has_room(self) -> bool:
        """Whether a hash asked for now would run or wait, rather than be refused."""
        return self._max_admitted is None or self._admitted < self._max_admitted

    @contextlib.contextmanager
    def reservation(self) -> Iterator[None]:
        """Hold a place among the hashes running or waiting, for a whole request.

        ``HashingBusy`` at once when there is none: a request that will hash is refused
        before it does any other work. Hashes run inside the block use its place.
        """
        if _reserved.get() is self:
            yield
            return
        if not self.has_room():
            raise HashingBusy()
        self._admitted += 1
        token = _reserved.set(self)
        try:
            yield
        finally:
            _reserved.reset(token)
            self._admitted -= 1

    async def _run(self, operation: str, func: Callable[..., T], *args: str) -> T:
        observe = self._observe
        slots = self._slots

        def timed() -> T:
            with slots.hold() if slots is not None else contextlib.nullcontext():
                # Timed inside the thread: the figure is argon2's cost, not the queue's.
                started = time.perf_counter()
                try:
                    return func(*args)
                finally:
                    if observe is not None:
                        observe(operation, time.perf_counter() - started)

        with self.reservation():
            async with self._limiter:
                running = asyncio.get_running_loop().run_in_executor(self._threads, timed)
                # Like anyio.to_thread.run_sync: a cancelled caller still waits for its hash
                # to end, so the limiter never admits more hashes than there are threads.
                with anyio.CancelScope(shield=True):
                    result = await running
        return result

    def close(self) -> None:
        """Let the threads end (a hash still running finishes first)."""
        self._threads.shutdown(wait=False)

    # In a hashing thread: in the held slot's shared memory when there is one
    # (``MachineSlots.region``), else with argon2-cffi's own allocation.

    def _hash_sync(self, password: str) -> str:
        region = self._slots.region(self._params.memory_cost) if self._slots else None
        if region is not None:
            encoded = argon2_memory.hash_password(
                region, password, self._params, hash_len=HASH_LEN, salt_len=SALT_LEN
            )
            if encoded is not None:
                return encoded
        return self._hash.hash(password)

    def _verify_sync(self, password: str, password_hash: str) -> bool:
        parsed = argon2_memory.parse(password_hash) if self._slots else None
        if parsed is not None and self._slots is not None:
            region = self._slots.region(parsed[0].memory_cost)
            if region is not None:
                valid = argon2_memory.verify(region, password, password_hash)
                if valid is not None:
                    return valid
        return self._argon2.verify(password, password_hash)

    def _verify_and_update_sync(self, password: str, password_hash: str) -> tuple[bool, str | None]:
        if not Argon2Hasher.identify(password_hash):
            # pwdlib says what it is not (UnknownHashError), as on a single worker.
            return self._hash.verify_and_update(password, password_hash)
        if not self._verify_sync(password, password_hash):
            return False, None
        if self._argon2.check_needs_rehash(password_hash):
            return True, self._hash_sync(password)
        return True, None

    async def hash(self, password: str) -> str:
        return await self._run("hash", self._hash_sync, password)

    async def verify_and_update(self, password: str, password_hash: str) -> tuple[bool, str | None]:
        """Check ``password``; the second item is a new hash when the parameters changed."""
        return await self._run("verify", self._verify_and_update_sync, password, password_hash)

    async def dummy_verify(self, password: str) -> None:
        """Spend the time of a real verification, for a user that does not exist."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(_DUMMY_PASSWORD)
        await self._run("verify", self._verify_sync, password, self._dummy_hash)


class MachineSlots:
    """At most ``count`` argon2 runs at once across every process that shares ``directory``
    (the workers of one ``authsvc serve --workers N``, which sets it up: cli.serve).

    Each worker bounds its own hashes (``concurrency``), but N workers could run N times as
    many as there are cores, and argon2 runs that outnumber the cores only share them while
    their memory (``memory_cost`` each) evicts one another from the CPU caches: measured here,
    four concurrent runs on two cores cost each hash over a tenth more CPU than two. A
    slot is an exclusive ``flock`` on one of ``count`` files, taken by the hashing thread
    itself (never the event loop): a free one at once, else it waits on one of them.

    On tmpfs each slot also owns argon2's memory (``region``, security.argon2_memory): the
    runs of a slot reuse one buffer whichever worker's thread holds it, instead of one per
    thread, which measured another tenth cheaper per hash.
    """

    def __init__(self, directory: Path, count: int, *, shared_memory: bool | None = None) -> None:
        self._directory = directory
        self._paths = [directory / f"argon2-slot-{i}" for i in range(max(1, count))]
        for path in self._paths:
            path.touch(exist_ok=True)
        self._local = threading.local()
        if shared_memory is None:
            shared_memory = argon2_memory.on_tmpfs(directory)
        self._shared = shared_memory and argon2_memory.available()
        # This process's mappings of the slots' memory, by slot.
        self._regions: dict[int, argon2_memory.Region] = {}

    def _files(self) -> list[int]:
        # Per thread: flock belongs to an open file, so two threads sharing one would both
        # "hold" the same slot.
        files: list[int] | None = getattr(self._local, "files", None)
        if files is None:
            files = self._local.files = [os.open(p, os.O_RDWR) for p in self._paths]
        return files

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        files = self._files()
        start = (os.getpid() + threading.get_native_id()) % len(files)
        order = list(range(start, len(files))) + list(range(start))
        held = None
        for index in order:
            try:
                fcntl.flock(files[index], fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            held = index
            break
        if held is None:
            held = order[0]
            fcntl.flock(files[held], fcntl.LOCK_EX)
        self._local.slot = held
        try:
            yield
        finally:
            self._local.slot = None
            fcntl.flock(files[held], fcntl.LOCK_UN)

    def region(self, memory_cost: int) -> argon2_memory.Region | None:
        """The memory of the slot this thread holds, at least ``memory_cost`` KiB; ``None``
        when it holds none, memory is not shared, or it cannot be had (tmpfs full)."""
        slot: int | None = getattr(self._local, "slot", None)
        if slot is None or not self._shared:
            return None
        size = memory_cost * 1024
        region = self._regions.get(slot)
        if region is None or region.size < size:
            # Only the slot's holder maps or grows it: no other run uses it meanwhile.
            try:
                region = argon2_memory.Region.open(self._directory / f"argon2-memory-{slot}", size)
            except (OSError, ValueError):
                return None
            self._regions[slot] = region
        return region


# Set by ``authsvc serve --workers N`` for its workers (cli.serve): the directory of their
# shared hashing slots (``MachineSlots``). Not a setting: the workers of one server share it.
SLOTS_DIR_ENV = "AUTHSVC_HASH_SLOTS_DIR"


def machine_slots_from_env() -> MachineSlots | None:
    directory = os.environ.get(SLOTS_DIR_ENV)
    if not directory:
        return None
    return MachineSlots(Path(directory), len(os.sched_getaffinity(0)))


def _lower_priority() -> None:
    """Run in each hashing thread as it starts: lower this thread's priority (Linux)."""
    # Not Linux, or not allowed: the thread hashes at normal priority.
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_THREAD_NICE)
