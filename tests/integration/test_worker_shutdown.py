"""Shutting worker environments down from another thread while they are in use.

``WorkerPool.close()`` runs on the main thread while the event-source pollers may still be inside
``ExecutionEnvironment.invoke()``, blocked polling the worker's pipe; the invoking thread itself
calls ``kill()`` when it sees the end of the pipe or the function timeout. The pipe must be closed
exactly once, and never under a thread that is polling it (a double ``close`` is ``EBADF``; a close
under a poller lets the descriptor number be reused while it is still being polled).

The interleavings are forced, not hoped for: the parent's end of the pipe is wrapped in a
``GatedPipe`` that holds the invoking thread inside ``poll`` until the test lets it go, and that
records which thread closed it. Every wait is on an event, with a generous bound.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from imgcap.local.workers import ExecutionEnvironment, FunctionSpec, InvocationResult, WorkerPool

pytestmark = pytest.mark.integration

WAIT_S = 120.0  # bound on every wait for another thread or process; never reached when it works


def sleepy_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Importable by the spawned worker: sleeps far past any wait in these tests."""
    time.sleep(float(event["sleep_s"]))
    return {"slept": event["sleep_s"], "pid": os.getpid()}


def _spec(timeout_s: float = 600.0) -> FunctionSpec:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME") or k.startswith("PYTHON")}
    return FunctionSpec(
        name="shutdown-test",
        handler=f"{__name__}.sleepy_handler",
        env=env,
        memory_mb=128,
        timeout_s=timeout_s,
    )


class GatedPipe:
    """The parent's end of a worker pipe that can hold the invoking thread inside ``poll``.

    Once an ``invoke`` message has been sent, the next ``poll`` sets ``polling`` and waits for
    ``release`` before polling for real. Every ``close`` call is recorded with its thread.
    """

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._invoke_sent = False
        self.polling = threading.Event()
        self.release = threading.Event()
        self.closed_by: list[int] = []
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return bool(self._conn.closed)

    def send(self, message: Any) -> None:
        if message[0] == "invoke":
            self._invoke_sent = True
        self._conn.send(message)

    def poll(self, timeout: float | None = None) -> bool:
        if self._invoke_sent and not self.polling.is_set():
            self.polling.set()
            assert self.release.wait(WAIT_S), "the test never released the poller"
        return bool(self._conn.poll(timeout))

    def recv(self) -> Any:
        return self._conn.recv()

    def close(self) -> None:
        with self._lock:
            self.closed_by.append(threading.get_ident())
        self._conn.close()


def _gate(env: ExecutionEnvironment) -> GatedPipe:
    gated = GatedPipe(env._conn)
    env._conn = gated  # type: ignore[assignment]
    return gated


@pytest.fixture
def environments() -> Iterator[list[ExecutionEnvironment]]:
    """Environments a test creates; each one is killed at teardown whatever happened."""
    made: list[ExecutionEnvironment] = []
    yield made
    for env in made:
        with_gate = env._conn
        if isinstance(with_gate, GatedPipe):
            with_gate.release.set()
        env.kill()


class Invoker(threading.Thread):
    """Runs one invocation on a thread and keeps its result or exception."""

    def __init__(self, target: Any, event: dict[str, Any]) -> None:
        super().__init__(name="invoker", daemon=True)
        self._target = target
        self._event = event
        self.result: InvocationResult | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._target(self._event)
        except BaseException as exc:
            self.error = exc


def test_given_an_invocation_in_flight_when_the_pool_closes_then_only_the_invoking_thread_closes_the_pipe(
    environments: list[ExecutionEnvironment],
) -> None:
    pool = WorkerPool(_spec(), size=1)
    (env,) = pool._all
    environments.append(env)
    gated = _gate(env)
    invoker = Invoker(pool.invoke, {"sleep_s": 600})
    invoker.start()
    assert gated.polling.wait(WAIT_S), "the invocation never reached poll"

    # When the pool is closed while that thread is inside poll
    pool.close()

    # Then the worker process is killed, but the pipe the poller is using is left alone
    env.process.join(WAIT_S)
    assert env.process.exitcode is not None
    assert env.process.exitcode < 0  # killed by a signal, not a clean exit
    assert gated.closed_by == []
    assert not gated.closed
    assert not env.alive()

    # When the poller goes on, it sees the end of the pipe and closes it itself, exactly once
    gated.release.set()
    invoker.join(WAIT_S)
    assert not invoker.is_alive()
    assert invoker.error is None
    assert invoker.result is not None
    assert not invoker.result.ok
    assert invoker.result.error_type == "Runtime.ExitError"
    assert not invoker.result.timed_out
    assert gated.closed_by == [invoker.ident]
    assert gated.closed
    assert env.closed

    # ... and the closed pool takes no more work
    with pytest.raises(RuntimeError, match="closed"):
        pool.invoke({"sleep_s": 0})


def test_given_an_invocation_in_flight_when_killed_from_another_thread_then_it_returns_an_exit_error(
    environments: list[ExecutionEnvironment],
) -> None:
    env = ExecutionEnvironment(_spec(), multiprocessing.get_context("spawn"))
    environments.append(env)
    gated = _gate(env)
    invoker = Invoker(env.invoke, {"sleep_s": 600})
    invoker.start()
    assert gated.polling.wait(WAIT_S), "the invocation never reached poll"

    env.kill()
    env.kill()  # again: a second kill from another thread changes nothing

    assert gated.closed_by == []
    gated.release.set()
    invoker.join(WAIT_S)
    assert invoker.error is None
    assert invoker.result is not None
    assert invoker.result.error_type == "Runtime.ExitError"
    assert gated.closed_by == [invoker.ident]
    assert env.closed

    # a killed environment refuses the next invocation without touching the pipe
    after = env.invoke({"sleep_s": 0})
    assert not after.ok
    assert after.error_type == "Runtime.ExitError"
    assert gated.closed_by == [invoker.ident]


def test_given_an_idle_environment_when_many_threads_kill_it_at_once_then_the_pipe_is_closed_once(
    environments: list[ExecutionEnvironment],
) -> None:
    env = ExecutionEnvironment(_spec(), multiprocessing.get_context("spawn"))
    environments.append(env)
    gated = _gate(env)
    threads = 8
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def kill() -> None:
        try:
            start.wait(WAIT_S)
            env.kill()
        except BaseException as exc:
            errors.append(exc)

    killers = [threading.Thread(target=kill, name=f"killer-{i}") for i in range(threads)]
    for killer in killers:
        killer.start()
    for killer in killers:
        killer.join(WAIT_S)

    assert not any(k.is_alive() for k in killers)
    assert errors == []
    assert len(gated.closed_by) == 1
    assert gated.closed
    assert env.closed
    assert not env.process.is_alive()
    assert not env.alive()


def test_given_a_pool_when_closed_with_idle_environments_then_every_worker_is_gone() -> None:
    pool = WorkerPool(_spec(), size=2)
    envs = list(pool._all)

    pool.close()
    pool.close()  # closing twice is harmless

    assert all(env.closed for env in envs)
    assert not any(env.process.is_alive() for env in envs)
