"""Lambda-like execution environments: one worker process per concurrent environment.

Each worker is a ``multiprocessing`` *spawn* process that gets the function's environment
variables before anything is imported, imports the handler once (the init phase, like a cold
start) and then runs invocations one at a time with a context object
(``get_remaining_time_in_millis``, ``function_name``, ``memory_limit_in_mb``,
``invoked_function_arn``, ``aws_request_id``). Events and responses cross the boundary as JSON,
as they do in Lambda.

Everything the handler prints (Powertools writes JSON logs and EMF metric blobs to stdout) is
captured line by line and sent to the parent as it is written. The parent enforces the function
timeout: an invocation that runs past it is killed with its process, and the environment is
replaced on the next invocation, as Lambda does. Each result carries the worker's peak RSS and
the CPU time the invocation used (which, unlike its duration, a busy machine hardly inflates).

Threads: one thread at a time runs ``invoke`` on an environment (the pool hands each environment
to one caller), but ``kill`` may come from any thread at any moment (the pool's ``close`` while
pollers are still waiting on answers). The pipe is only ever closed by the thread that uses it, or
when nobody does: ``kill`` on an environment that another thread is invoking kills the process
only, and that thread, woken by the end of the pipe, closes it on its way out.
"""

from __future__ import annotations

import importlib
import io
import json
import multiprocessing
import os
import queue
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

INIT_TIMEOUT_S = 120.0  # spawn + imports on a busy 2-core machine (imports alone: 7 s); Lambda allows 10 s
# The parent waits this much past the function timeout before it kills the worker: the worker's
# own deadline starts when it receives the event, and on a busy machine the answer of a handler
# that stops just in time (``get_remaining_time_in_millis``) can take a while to arrive.
KILL_GRACE_S = 1.0
REAP_TIMEOUT_S = 10.0  # how long ``kill`` waits for a SIGKILLed worker to be reaped


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """One function as the emulator runs it."""

    name: str
    handler: str  # dotted path: "lambdas.caption.handler.lambda_handler"
    env: Mapping[str, str]  # the complete environment of the execution environment
    memory_mb: int
    timeout_s: float
    region: str = "us-east-1"
    account: str = "123456789012"

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account}:function:{self.name}"


@dataclass(frozen=True, slots=True)
class InvocationResult:
    function: str
    request_id: str
    ok: bool
    response: Any = None
    error_type: str | None = None
    error_message: str | None = None
    timed_out: bool = False
    duration_ms: float = 0.0
    cold_start: bool = False
    init_ms: float | None = None
    log_lines: tuple[str, ...] = ()
    peak_rss_kb: int = 0
    cpu_ms: float = 0.0  # CPU time of the worker process during the invocation (all its threads)
    worker_pid: int = 0
    started_at: float = 0.0  # epoch seconds


# --- inside the worker process ----------------------------------------------------------------


class _LineCapture(io.TextIOBase):
    """Replaces sys.stdout/sys.stderr in the worker: every complete line goes to the parent."""

    def __init__(self, conn: Connection, lock: threading.Lock) -> None:
        super().__init__()
        self._conn = conn
        self._lock = lock
        self._partial = ""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._partial += text
            *lines, self._partial = self._partial.split("\n")
            for line in lines:
                self._conn.send(("line", line))
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._partial:
                line, self._partial = self._partial, ""
                self._conn.send(("line", line))


@dataclass
class _Context:
    """What Lambda passes as ``context`` (the attributes Powertools and our handlers read)."""

    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    aws_request_id: str
    deadline: float  # time.monotonic() value
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = ""
    identity: Any = None
    client_context: Any = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def _peak_rss_kb() -> int:
    """Peak resident set size of this worker, in KiB.

    On Linux, ``getrusage``'s ``ru_maxrss`` survives fork+exec: a spawned worker starts out with
    the parent's RSS at fork time as its "peak". ``VmHWM`` in /proc/self/status is the high-water
    mark of this process image alone, so it is preferred where it exists.
    """
    import resource

    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak // 1024 if sys.platform == "darwin" else peak  # macOS reports bytes


def _load_handler(path: str) -> Callable[[Any, Any], Any]:
    module_name, _, attr = path.rpartition(".")
    handler = getattr(importlib.import_module(module_name), attr)
    if not callable(handler):
        raise TypeError(f"{path} is not callable")
    return handler


def _error_line(exc: BaseException) -> str:
    """The line the Lambda Python runtime logs for an unhandled exception."""
    return json.dumps(
        {
            "errorMessage": str(exc),
            "errorType": type(exc).__name__,
            "stackTrace": traceback.format_exception(exc)[1:],
        }
    )


# Modules that read the function's environment when imported (Powertools' Logger and Metrics take
# the service name, namespace and stdout at construction). Spawn re-imports the parent's main
# module in the child, which may have imported them already with the parent's environment; they
# are dropped so the handler's import builds them afresh, inside this execution environment.
_ENVIRONMENT_BOUND = ("lambdas", "aws_lambda_powertools")


def _forget_environment_bound_modules() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in _ENVIRONMENT_BOUND:
            del sys.modules[name]


def execution_environment_main(
    conn: Connection, handler_path: str, env: dict[str, str], spec_fields: dict[str, Any]
) -> None:
    """Entry point of a worker process (must stay importable for multiprocessing spawn)."""
    import signal

    # Ctrl-C in the terminal reaches the whole process group; like a Lambda environment, the worker
    # ignores it and is stopped by its parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.clear()
    os.environ.update(env)
    lock = threading.Lock()
    capture = _LineCapture(conn, lock)
    sys.stdout = capture
    sys.stderr = capture
    _forget_environment_bound_modules()
    started = time.perf_counter()
    handler: Callable[[Any, Any], Any] | None = None
    init_error: tuple[str, str] | None = None
    try:
        handler = _load_handler(handler_path)
    except Exception as exc:
        print(_error_line(exc))
        init_error = ("Runtime.ImportModuleError", f"Unable to import module {handler_path!r}: {exc}")
    capture.flush()
    with lock:
        conn.send(("ready", (time.perf_counter() - started) * 1000, init_error))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] == "stop":
            return
        _, request_id, event_json, timeout_s = message
        context = _Context(
            function_name=spec_fields["name"],
            memory_limit_in_mb=spec_fields["memory_mb"],
            invoked_function_arn=spec_fields["arn"],
            aws_request_id=request_id,
            deadline=time.monotonic() + float(timeout_s),
            log_group_name=f"/aws/lambda/{spec_fields['name']}",
            log_stream_name=f"local/{os.getpid()}",
        )
        t0, cpu0 = time.perf_counter(), time.process_time()
        ok, payload, error_type, error_message = False, None, None, None
        if handler is None:
            assert init_error is not None
            error_type, error_message = init_error
        else:
            try:
                response = handler(json.loads(event_json), context)
                payload = json.dumps(response)
                ok = True
            except Exception as exc:
                print(_error_line(exc))
                error_type, error_message = type(exc).__name__, str(exc)
        capture.flush()
        duration_ms = (time.perf_counter() - t0) * 1000
        cpu_ms = (time.process_time() - cpu0) * 1000
        with lock:
            conn.send(
                (
                    "result",
                    request_id,
                    ok,
                    payload,
                    error_type,
                    error_message,
                    duration_ms,
                    _peak_rss_kb(),
                    cpu_ms,
                )
            )


# --- in the parent ----------------------------------------------------------------------------


class ExecutionEnvironment:
    """The parent's handle on one worker process.

    ``invoke`` runs in one thread at a time; ``kill``, ``request_stop`` and ``stop`` are safe from
    any thread, at any moment, any number of times.
    """

    def __init__(self, spec: FunctionSpec, ctx: Any) -> None:
        self.spec = spec
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        self._conn: Connection = parent_conn
        self.process = ctx.Process(
            target=execution_environment_main,
            args=(
                child_conn,
                spec.handler,
                dict(spec.env),
                {"name": spec.name, "memory_mb": spec.memory_mb, "arn": spec.arn},
            ),
            name=f"lambda-{spec.name}",
            daemon=True,
        )
        self.process.start()
        child_conn.close()
        self._ready = False
        self.init_ms: float | None = None
        self._init_error: tuple[str, str] | None = None
        self._pending_lines: list[str] = []
        self.invocations = 0
        # Who may touch the pipe. ``_state`` guards the fields below it.
        self._state = threading.Lock()
        self._invoker: int | None = None  # the thread inside invoke(), if any
        self._retired = False  # kill() was called: no invocation starts any more
        self._stop_after = False  # request_stop() while busy: the invoking thread sends it
        self._closed = False  # the pipe is closed and the process killed: nothing left to do

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    @property
    def closed(self) -> bool:
        """True once the pipe is closed and the process is gone (``kill`` has finished)."""
        with self._state:
            return self._closed

    def alive(self) -> bool:
        with self._state:
            if self._retired:
                return False
        return bool(self.process.is_alive())

    def _await_ready(self) -> None:
        deadline = time.monotonic() + INIT_TIMEOUT_S
        while not self._ready:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._conn.poll(remaining):
                raise TimeoutError(f"{self.spec.name}: the execution environment did not start")
            message = self._conn.recv()
            if message[0] == "line":
                self._pending_lines.append(message[1])
            elif message[0] == "ready":
                self._ready = True
                self.init_ms, self._init_error = message[1], message[2]

    def invoke(self, event: Any, timeout_s: float | None = None) -> InvocationResult:
        """Run one invocation; on timeout or crash the process is killed (check ``alive()``)."""
        me = threading.get_ident()
        with self._state:
            if self._invoker is not None:
                raise RuntimeError(f"{self.spec.name}: the execution environment is already invoking")
            retired = self._retired
            if not retired:
                self._invoker = me
        if retired:
            return InvocationResult(
                ok=False,
                error_type="Runtime.ExitError",
                error_message="the execution environment was shut down",
                **self._base(),
            )
        try:
            return self._invoke(event, self.spec.timeout_s if timeout_s is None else timeout_s)
        finally:
            with self._state:
                self._invoker = None
                retired, stop_after = self._retired, self._stop_after
            if retired:
                self.kill()  # killed from another thread meanwhile: the pipe is ours to close
            elif stop_after:
                self.request_stop()

    def _base(self) -> dict[str, Any]:
        return {
            "function": self.spec.name,
            "request_id": str(uuid.uuid4()),
            "worker_pid": self.pid,
            "started_at": time.time(),
        }

    def _invoke(self, event: Any, timeout_s: float) -> InvocationResult:
        base = self._base()
        request_id = base["request_id"]
        cold = self.invocations == 0
        try:
            self._await_ready()
        except (TimeoutError, EOFError, OSError) as exc:
            self.kill()
            return InvocationResult(
                ok=False, error_type="Runtime.InitError", error_message=str(exc), cold_start=cold, **base
            )
        self.invocations += 1
        lines, self._pending_lines = self._pending_lines, []
        t0 = time.monotonic()
        try:
            self._conn.send(("invoke", request_id, json.dumps(event), timeout_s))
        except (BrokenPipeError, OSError) as exc:
            self.kill()
            return InvocationResult(ok=False, error_type="Runtime.ExitError", error_message=str(exc), **base)
        deadline = t0 + timeout_s + KILL_GRACE_S
        while True:
            remaining = deadline - time.monotonic()
            try:
                ready = remaining > 0 and self._conn.poll(remaining)
                message = self._conn.recv() if ready else None
            except (EOFError, OSError):
                self.kill()
                return InvocationResult(
                    ok=False,
                    error_type="Runtime.ExitError",
                    error_message="the execution environment exited during the invocation",
                    duration_ms=(time.monotonic() - t0) * 1000,
                    log_lines=tuple(lines),
                    cold_start=cold,
                    init_ms=self.init_ms if cold else None,
                    **base,
                )
            if message is None:
                duration_ms = (time.monotonic() - t0) * 1000
                self.kill()
                text = f"Task timed out after {timeout_s:.2f} seconds"
                lines.append(text)
                return InvocationResult(
                    ok=False,
                    error_type="Sandbox.Timedout",
                    error_message=text,
                    timed_out=True,
                    duration_ms=duration_ms,
                    log_lines=tuple(lines),
                    cold_start=cold,
                    init_ms=self.init_ms if cold else None,
                    **base,
                )
            if message[0] == "line":
                lines.append(message[1])
                continue
            _, _rid, ok, payload, error_type, error_message, duration_ms, rss, cpu_ms = message
            return InvocationResult(
                ok=bool(ok),
                response=json.loads(payload) if ok and payload is not None else None,
                error_type=error_type,
                error_message=error_message,
                duration_ms=float(duration_ms),
                cold_start=cold,
                init_ms=self.init_ms if cold else None,
                log_lines=tuple(lines),
                peak_rss_kb=int(rss),
                cpu_ms=float(cpu_ms),
                **base,
            )

    def _busy_elsewhere(self) -> bool:
        """Another thread is inside invoke() (call with ``_state`` held)."""
        return self._invoker is not None and self._invoker != threading.get_ident()

    def request_stop(self) -> None:
        """Ask the worker to exit after its current invocation (returns at once)."""
        with self._state:
            if self._closed or self._retired:
                return
            if self._busy_elsewhere():
                self._stop_after = True  # the invoking thread sends it when the answer is in
                return
            if self.process.is_alive():
                with suppress(BrokenPipeError, OSError):
                    self._conn.send(("stop",))

    def stop(self) -> None:
        self.request_stop()
        self.process.join(timeout=2)
        self.kill()

    def kill(self) -> None:
        """Stop the worker for good: kill the process, close the pipe. Idempotent, any thread.

        If another thread is inside ``invoke`` (polling the pipe), only the process is killed:
        closing the pipe under that thread would race with its own close (``EBADF``), or worse,
        let the descriptor number be reused while it is still being polled. That thread sees the
        end of the pipe at once and closes it on its way out of ``invoke``.
        """
        with self._state:
            if self._closed:
                return
            self._retired = True
            if self.process.is_alive():
                self.process.kill()
            if self._busy_elsewhere():
                return
            self._closed = True
            self.process.join(timeout=REAP_TIMEOUT_S)
            self._conn.close()


@dataclass
class PoolStats:
    invocations: int = 0
    errors: int = 0
    timeouts: int = 0
    cold_starts: int = 0
    environments_started: int = 0
    environments_replaced: int = 0
    peak_rss_kb: int = 0
    max_cpu_ms: float = 0.0  # the most CPU time one invocation used
    duration_ms_total: float = 0.0  # every invocation's duration (what Lambda bills, with init)
    init_ms: list[float] = field(default_factory=list)

    def as_dict(self, memory_mb: int) -> dict[str, Any]:
        return {
            "invocations": self.invocations,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "cold_starts": self.cold_starts,
            "environments_started": self.environments_started,
            "environments_replaced": self.environments_replaced,
            "peak_rss_mb": round(self.peak_rss_kb / 1024, 1),
            "max_cpu_ms": round(self.max_cpu_ms, 1),
            "memory_mb": memory_mb,
            "max_init_ms": round(max(self.init_ms), 1) if self.init_ms else None,
            "duration_s_total": round(self.duration_ms_total / 1000, 3),
            "gb_seconds": round(self.gb_seconds(memory_mb), 3),
        }

    def gb_seconds(self, memory_mb: int) -> float:
        billed_ms = self.duration_ms_total + sum(self.init_ms)
        return billed_ms / 1000 * memory_mb / 1024


class WorkerPool:
    """Up to ``size`` execution environments of one function; ``invoke`` blocks for a free one."""

    def __init__(self, spec: FunctionSpec, size: int, *, prewarm: bool = True) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one environment")
        self.spec = spec
        self.size = size
        self._ctx = multiprocessing.get_context("spawn")
        self._slots: queue.LifoQueue[ExecutionEnvironment | None] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._all: set[ExecutionEnvironment] = set()
        self._closed = False
        self.stats = PoolStats()
        for _ in range(size):
            self._slots.put(self._spawn() if prewarm else None)

    def _spawn(self) -> ExecutionEnvironment:
        if self._closed:
            raise RuntimeError(f"{self.spec.name}: the worker pool is closed")
        env = ExecutionEnvironment(self.spec, self._ctx)
        with self._lock:
            closed = self._closed
            if not closed:
                self._all.add(env)
                self.stats.environments_started += 1
        if closed:  # close() ran while this one was starting: it must not outlive the pool
            env.kill()
            raise RuntimeError(f"{self.spec.name}: the worker pool is closed")
        return env

    def invoke(self, event: Any) -> InvocationResult:
        env = self._slots.get()
        try:
            if self._closed:
                raise RuntimeError(f"{self.spec.name}: the worker pool is closed")
            if env is None or not env.alive():
                if env is not None:
                    with self._lock:
                        self._all.discard(env)
                        self.stats.environments_replaced += 1
                    env.kill()  # it died on its own: reap it and close its pipe
                env = self._spawn()
            result = env.invoke(event)
            with self._lock:
                self.stats.invocations += 1
                self.stats.errors += 0 if result.ok else 1
                self.stats.timeouts += 1 if result.timed_out else 0
                self.stats.cold_starts += 1 if result.cold_start else 0
                self.stats.peak_rss_kb = max(self.stats.peak_rss_kb, result.peak_rss_kb)
                self.stats.max_cpu_ms = max(self.stats.max_cpu_ms, result.cpu_ms)
                self.stats.duration_ms_total += result.duration_ms
                if result.init_ms is not None:
                    self.stats.init_ms.append(result.init_ms)
            return result
        finally:
            self._slots.put(env)

    def close(self) -> None:
        """Discard every environment, from any thread, while invocations may still be running.

        Like Lambda, environments are simply frozen and discarded: everything an invocation
        printed has already been collected, so there is nothing to flush. An idle environment is
        killed and its pipe closed here; one that a poller thread is invoking right now only has
        its process killed (``ExecutionEnvironment.kill``): that thread gets a
        ``Runtime.ExitError`` result at once and closes the pipe itself.
        """
        with self._lock:
            self._closed = True
            envs = list(self._all)
        for env in envs:
            env.kill()
