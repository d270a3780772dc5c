from __future__ import annotations

import asyncio
import itertools
import os
import sys
import threading
import time
from contextvars import Context
from dataclasses import replace
from pathlib import Path

import pytest
from argon2 import PasswordHasher as ArgonPasswordHasher
from argon2.low_level import Type, hash_secret_raw
from pwdlib.exceptions import UnknownHashError

from authsvc.errors import HashingBusy
from authsvc.security import argon2_memory, passwords
from authsvc.security.passwords import MachineSlots, PasswordHasher


async def test_real_parameters_are_owasp_minimum_argon2id() -> None:
    hasher = PasswordHasher()
    digest = await hasher.hash("correct horse battery staple")
    assert digest.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert await hasher.verify_and_update("correct horse battery staple", digest) == (True, None)
    ok, _ = await hasher.verify_and_update("wrong", digest)
    assert ok is False


async def test_changed_parameters_give_a_new_hash_on_verify() -> None:
    old = await PasswordHasher(memory_cost=1024, time_cost=1).hash("pw-1234567890")
    ok, new = await PasswordHasher().verify_and_update("pw-1234567890", old)
    assert ok is True
    assert new is not None and new.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


async def test_hashing_does_not_block_the_event_loop() -> None:
    hasher = PasswordHasher(concurrency=2)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    await asyncio.gather(*(hasher.hash(f"password-{i}") for i in range(6)))
    elapsed = time.perf_counter() - started
    task.cancel()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    # Six real argon2id hashes take far longer than any pause the loop saw.
    assert max(gaps) < elapsed / 2
    assert len(ticks) > 5


async def test_dummy_verify_costs_a_real_verification() -> None:
    hasher = PasswordHasher()
    digest = await hasher.hash("some password 123")
    await hasher.dummy_verify("warm up")
    t0 = time.perf_counter()
    await hasher.dummy_verify("whatever")
    dummy = time.perf_counter() - t0
    t0 = time.perf_counter()
    await hasher.verify_and_update("whatever", digest)
    real = time.perf_counter() - t0
    assert dummy > real / 4  # same order of magnitude: not a shortcut


async def test_a_full_queue_refuses_at_once_without_hashing() -> None:
    calls: list[str] = []
    hasher = PasswordHasher(concurrency=1, queue_max=2, observe=lambda op, _s: calls.append(op))
    digest = await hasher.hash("the password 123")
    calls.clear()
    # One runs, two wait: the queue is full.
    admitted = [asyncio.create_task(hasher.verify_and_update("guess", digest)) for _ in range(3)]
    await asyncio.sleep(0)
    assert not hasher.has_room()
    for refused in (
        hasher.verify_and_update("guess", digest),
        hasher.hash("another password"),
        hasher.dummy_verify("guess"),
    ):
        with pytest.raises(HashingBusy) as info:
            await refused
        assert info.value.retry_after >= 1
    assert [ok for ok, _ in await asyncio.gather(*admitted)] == [False, False, False]
    assert calls == ["verify"] * 3  # the refused ones never reached argon2
    assert hasher.has_room()
    assert (await hasher.verify_and_update("the password 123", digest))[0] is True


async def test_without_a_queue_bound_every_request_waits() -> None:
    hasher = PasswordHasher(concurrency=1, memory_cost=1024, time_cost=1)
    digests = await asyncio.gather(*(hasher.hash(f"password-{i}") for i in range(20)))
    assert len(set(digests)) == 20


async def test_a_reservation_holds_one_place_for_the_whole_request() -> None:
    hasher = PasswordHasher(concurrency=1, queue_max=1, memory_cost=1024, time_cost=1)
    with hasher.reservation():
        # The request's own hashes use its place...
        digest = await hasher.hash("the password 123")
        assert (await hasher.verify_and_update("the password 123", digest))[0] is True
        with hasher.reservation():
            assert hasher.has_room()  # one place taken of two
        # ...and a second request (a task of its own) takes the other; a third is refused
        # before any work.
        other = asyncio.create_task(hasher.hash("another one 456"), context=Context())
        await asyncio.sleep(0)
        assert not hasher.has_room()

        def third_request() -> None:
            with hasher.reservation():
                pass

        with pytest.raises(HashingBusy):
            Context().run(third_request)
        await other
    assert hasher.has_room()


class Recorder:
    """An observer that notes which thread ran each hash and how many ran at once."""

    def __init__(self) -> None:
        self.threads: set[int] = set()
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def wrap(self, hasher: PasswordHasher) -> None:
        original = hasher._hash.hash

        def hash_and_note(password: str) -> str:
            with self.lock:
                self.threads.add(threading.get_ident())
                self.running += 1
                self.most = max(self.most, self.running)
            try:
                return original(password)
            finally:
                with self.lock:
                    self.running -= 1

        hasher._hash.hash = hash_and_note  # type: ignore[method-assign]


async def test_hashes_run_in_the_hashers_own_threads_only() -> None:
    """At most `concurrency` threads ever hash (each keeps its freed argon2 buffer in its own
    malloc arena: docs/deployment.md, "Kubernetes"), and at most that many at once, also
    across bursts separated by idle time and while callers are cancelled mid-hash."""
    hasher = PasswordHasher(memory_cost=1024, time_cost=1, concurrency=2)
    recorder = Recorder()
    recorder.wrap(hasher)
    for burst in range(3):
        await asyncio.gather(*(hasher.hash(f"password-{burst}-{i}") for i in range(12)))
        await asyncio.sleep(0.05)
    # Callers that give up while their hash runs or waits: the threads still take no more.
    tasks = [asyncio.create_task(hasher.hash(f"cancelled-{i}")) for i in range(8)]
    await asyncio.sleep(0.001)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*(hasher.hash(f"after-{i}") for i in range(6)))
    hasher.close()
    assert len(recorder.threads) <= 2
    assert recorder.most <= 2
    assert threading.get_ident() not in recorder.threads  # never on the event loop's thread


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
async def test_hashing_threads_run_at_the_lowest_priority() -> None:
    hasher = PasswordHasher(concurrency=2, memory_cost=1024, time_cost=1)

    def nice_of_this_thread() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    try:
        seen = await asyncio.gather(*(hasher._run("probe", nice_of_this_thread) for _ in range(4)))
    finally:
        hasher.close()
    assert set(seen) == {passwords.HASH_THREAD_NICE}
    # The event loop's own thread keeps its priority.
    assert nice_of_this_thread() == os.getpriority(os.PRIO_PROCESS, 0) < passwords.HASH_THREAD_NICE


async def test_workers_sharing_slots_run_no_more_hashes_at_once_than_slots(
    tmp_path: Path,
) -> None:
    """Two hashers (two workers of one serve) share two slots (MachineSlots): with four
    threads each and sixteen hashes asked for at once, at most two run at any moment, and
    all sixteen are done."""
    running = 0
    most = 0
    lock = threading.Lock()

    hashers = [
        PasswordHasher(
            memory_cost=8,
            time_cost=1,
            concurrency=4,
            machine_slots=MachineSlots(tmp_path, 2),
        )
        for _ in range(2)
    ]

    def counted(hasher: PasswordHasher) -> None:
        original = hasher._hash.hash

        def hash_(password: str) -> str:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            time.sleep(0.05)  # long enough for the others to try
            with lock:
                running -= 1
            return original(password)

        hasher._hash.hash = hash_  # type: ignore[method-assign]

    for hasher in hashers:
        counted(hasher)
    try:
        results = await asyncio.gather(*(hashers[i % 2].hash(f"pw{i}") for i in range(16)))
    finally:
        for hasher in hashers:
            hasher.close()
    assert len(results) == 16
    assert most == 2


# -- argon2 in a slot's shared memory (security.argon2_memory) -------------------------------


def memory_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("argon2-memory-*"))


def shared_hasher(directory: Path, **overrides: int) -> PasswordHasher:
    params = {"memory_cost": 1024, "time_cost": 1, "concurrency": 2, **overrides}
    return PasswordHasher(
        **params,  # type: ignore[arg-type]
        machine_slots=MachineSlots(directory, 2, shared_memory=True),
    )


def test_a_slot_computes_argon2_cffis_own_hash(tmp_path: Path) -> None:
    salt = bytes(range(16))
    params = argon2_memory.Parameters(memory_cost=1024, time_cost=2, parallelism=2)
    region = argon2_memory.Region.open(tmp_path / "memory", 1024 * 1024)
    for secret in (b"pw", "pässwörd ✓".encode(), b"x" * 200):
        ours = argon2_memory.raw_hash(region, secret, salt, params, 32)
        theirs = hash_secret_raw(
            secret, salt, time_cost=2, memory_cost=1024, parallelism=2, hash_len=32, type=Type.ID
        )
        assert ours == theirs
    # Too little memory for the parameters: the library refuses, nothing is overrun.
    assert (
        argon2_memory.raw_hash(region, b"pw", salt, replace(params, memory_cost=2048), 32) is None
    )


async def test_hashes_in_shared_memory_are_argon2_cffis_and_verify_both_ways(
    tmp_path: Path,
) -> None:
    hasher = shared_hasher(tmp_path)
    plain = PasswordHasher(memory_cost=1024, time_cost=1)
    try:
        ours = await hasher.hash("correct horse")
        assert ours.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
        # The slot's memory was used: one file per slot that ran, sized for the run.
        used = memory_files(tmp_path)
        assert used and all(p.stat().st_size >= 1024 * 1024 for p in used)
        # argon2-cffi itself accepts ours, and ours accepts argon2-cffi's.
        assert ArgonPasswordHasher().verify(ours, "correct horse")
        theirs = await plain.hash("correct horse")
        assert await hasher.verify_and_update("correct horse", theirs) == (True, None)
        assert await hasher.verify_and_update("correct horsf", theirs) == (False, None)
        assert await hasher.verify_and_update("correct horse", ours) == (True, None)
        assert await hasher.verify_and_update("", ours) == (False, None)
    finally:
        hasher.close()
        plain.close()


async def test_forged_and_foreign_hashes_in_shared_memory(tmp_path: Path) -> None:
    hasher = shared_hasher(tmp_path)
    try:
        good = await hasher.hash("pw-1234567890")
        head, digest = good.rsplit("$", 1)
        flipped = ("A" if digest[0] != "A" else "B") + digest[1:]
        assert await hasher.verify_and_update("pw-1234567890", f"{head}${flipped}") == (False, None)
        # Another salt, same digest: forged.
        prefix, salt, digest = good.rsplit("$", 2)
        other_salt = ("A" if salt[0] != "A" else "B") + salt[1:]
        assert await hasher.verify_and_update(
            "pw-1234567890", f"{prefix}${other_salt}${digest}"
        ) == (False, None)
        # Not base64, truncated, another variant: argon2-cffi's own verdict (False).
        for broken in (
            good[:-10] + "!!!!!!!!!!",
            good.rsplit("$", 1)[0],
            good.replace("argon2id", "argon2i"),
        ):
            assert await hasher.verify_and_update("pw-1234567890", broken) == (False, None)
        # Not argon2 at all: pwdlib says so, as without shared memory.
        with pytest.raises(UnknownHashError):
            await hasher.verify_and_update("pw-1234567890", "$2b$12$abcdefghijklmnopqrstuv")
        # Other parameters verify (in a region grown for them), and ask for a new hash.
        costly = await PasswordHasher(memory_cost=2048, time_cost=1).hash("pw-1234567890")
        ok, new = await hasher.verify_and_update("pw-1234567890", costly)
        assert ok is True and new is not None and new.startswith("$argon2id$v=19$m=1024,t=1,")
    finally:
        hasher.close()


async def test_without_the_slots_memory_hashing_falls_back(tmp_path: Path) -> None:
    # The memory cannot be had (here: its path is a directory; on a full tmpfs, ENOSPC).
    for i in range(2):
        (tmp_path / f"argon2-memory-{i}").mkdir()
    hasher = shared_hasher(tmp_path)
    try:
        digest = await hasher.hash("pw-1234567890")
        assert await hasher.verify_and_update("pw-1234567890", digest) == (True, None)
        assert await hasher.verify_and_update("pw-123456789", digest) == (False, None)
    finally:
        hasher.close()


async def test_workers_sharing_slot_memory_under_a_burst_get_every_verdict_right(
    tmp_path: Path,
) -> None:
    """Two hashers (two workers) with four threads each share two slots and their memory:
    48 verifications at once, half of them wrong, each verdict its own."""
    hashers = [shared_hasher(tmp_path, concurrency=4) for _ in range(2)]
    try:
        stored = [await hashers[0].hash(f"pw-{i}") for i in range(6)]
        checks = [(i, f"pw-{i % 6}" if i % 2 == 0 else f"pw-{i % 6}-wrong") for i in range(48)]
        verdicts = await asyncio.gather(
            *(hashers[i % 2].verify_and_update(pw, stored[i % 6]) for i, pw in checks)
        )
    finally:
        for hasher in hashers:
            hasher.close()
    assert [ok for ok, _ in verdicts] == [i % 2 == 0 for i, _ in checks]
    assert len(memory_files(tmp_path)) == 2


def test_slot_memory_only_on_tmpfs(tmp_path: Path) -> None:
    shm = Path("/dev/shm")  # noqa: S108 - only looked at
    if shm.is_dir() and argon2_memory.on_tmpfs(shm):
        assert argon2_memory.on_tmpfs(shm / "authsvc-hashing-x")
    assert argon2_memory.on_tmpfs(Path("/proc")) is False
