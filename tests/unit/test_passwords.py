from __future__ import annotations

import asyncio
import itertools
import os
import sys
import threading
import time
from contextvars import Context
from pathlib import Path

import pytest

from authsvc.errors import HashingBusy
from authsvc.security import passwords
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
