"""Loopback servers: moto in server mode for S3, SQS and SSM, in a process of its own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

LOOPBACK = "127.0.0.1"
LOCAL_REGION = "us-east-1"
LOCAL_ACCOUNT = "123456789012"  # moto's default account

# Credentials for the loopback servers only: moto accepts any, nothing leaves the machine.
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local-testing",
    "AWS_SECRET_ACCESS_KEY": "local-testing",
    "AWS_SESSION_TOKEN": "local-testing",
    "AWS_DEFAULT_REGION": LOCAL_REGION,
    "AWS_REGION": LOCAL_REGION,
}


@dataclass(frozen=True, slots=True)
class MotoHandle:
    url: str


def _retention_check_in_constant_time() -> None:
    """moto checks each received message's retention by computing *all* queue attributes (three
    passes over every message in the queue, with clock reads), which makes a receive from a
    queue holding N messages O(N) per message: quadratic over a large local run, and the local
    runtime's biggest CPU cost at 2,000 images (py-spy, ~15%). Same rule, read directly."""
    import time

    from moto.sqs.models import SQSBackend

    if getattr(SQSBackend, "_imgcap_retention_patched", False):
        return

    def is_valid(self: SQSBackend, queue_name: str, message: Any) -> bool:
        queue = self.get_queue(queue_name)
        retention_s = int(queue.message_retention_period)  # type: ignore[attr-defined]
        return retention_s + message.sent_timestamp / 1000 > time.time()

    SQSBackend.is_message_valid_based_on_retention_period = is_valid  # type: ignore[method-assign]
    SQSBackend._imgcap_retention_patched = True  # type: ignore[attr-defined]


def _sqs_clock_from_time() -> None:
    """moto's SQS reads the clock as ``utcnow() - utcfromtimestamp(0)`` (two datetimes and a
    timedelta) on every visibility check, and checks every message of a queue on each receive,
    send (the queue's attributes count visible, delayed and in-flight messages) and wait: at 2,000
    images the datetime arithmetic alone was ~12% of the moto process (py-spy --gil). The same
    POSIX time, read with ``time.time()`` (a call with a datetime still goes to moto's own)."""
    import time

    from moto.sqs import models

    if getattr(models, "_imgcap_clock_patched", False):
        return

    from_datetime, from_datetime_millis = models.unix_time, models.unix_time_millis

    def unix_time(dt: Any = None) -> float:
        return time.time() if dt is None else from_datetime(dt)

    def unix_time_millis(dt: Any = None) -> float:
        return time.time() * 1000.0 if dt is None else from_datetime_millis(dt)

    models.unix_time = unix_time
    models.unix_time_millis = unix_time_millis
    models._imgcap_clock_patched = True  # type: ignore[attr-defined]


def _timestamps_parsed_by_fromisoformat() -> None:
    """moto stores an S3 object's LastModified as ISO-8601 text and, to render each listed key,
    parses it back with botocore's dateutil-based parser (hundreds of microseconds a key): the
    ledger's listings of a few thousand keys every few seconds then cost the moto process about
    half of its listing time (py-spy --gil). ``datetime.fromisoformat`` reads that text to the
    same instant in UTC (the zone botocore gives) in well under a microsecond; anything it does
    not read goes to botocore's parser as before."""
    from datetime import UTC, datetime

    from moto.core import serialize

    if getattr(serialize, "_imgcap_timestamps_patched", False):
        return
    slow = serialize.parse_to_aware_datetime

    def parse_to_aware_datetime(value: Any) -> datetime:
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                return slow(value)
            # botocore gives the instant in UTC; so does this (a text with no zone is UTC)
            return parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
        return slow(value)

    serialize.parse_to_aware_datetime = parse_to_aware_datetime
    serialize._imgcap_timestamps_patched = True  # type: ignore[attr-defined]


def _listings_from_one_snapshot() -> None:
    """moto's S3 key store iterates a copy of its key names but then looks each one up in the live
    store, so a key deleted by another request in between (the caption stage releases a claim while
    the ledger lists the bucket) raised ``KeyError``: a 500 for the listing, which the client then
    retried. Iterate the copy itself: a listing shows the bucket as it was when it began."""
    from moto.s3 import utils

    store = utils._VersionedKeyStore
    if getattr(store, "_imgcap_snapshot_patched", False):
        return

    def items(self: Any) -> Iterator[tuple[str, Any]]:
        for key, versions in self._self_iterable().items():
            if versions:
                yield key, versions[-1]

    def values(self: Any) -> Iterator[Any]:
        for _key, value in items(self):
            yield value

    def lists(self: Any) -> Iterator[tuple[str, list[Any]]]:
        yield from self._self_iterable().items()

    for names, method in (
        (("_iteritems", "items", "iteritems"), items),
        (("_itervalues", "values", "itervalues"), values),
        (("_iterlists", "lists", "iterlists"), lists),
    ):
        for name in names:
            setattr(store, name, method)
    store._imgcap_snapshot_patched = True  # type: ignore[attr-defined]


def _list_moto_modules_once() -> None:
    """moto's dispatcher lists its package directory (a listdir and a stat per service) on every
    request to find the backend; the list never changes while the process runs, so list it once.
    Measured: ~3% of the local runtime's CPU at a few hundred images a minute (py-spy)."""
    from moto import backends

    if getattr(backends, "_imgcap_listed_once", False):
        return
    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules
    backends._imgcap_listed_once = True  # type: ignore[attr-defined]


# How often the moto process's interpreter hands the GIL to another thread (Python's default: 5 ms).
# moto serves every connection in a thread of its own; a request is a few short bursts of CPU
# between socket reads and writes, and each time its thread comes back from the socket it waits
# for whichever thread holds the lock (a listing of thousands of keys, a receive scanning a queue)
# to reach the switch interval. A shorter interval bounds each of those waits.
MOTO_SWITCH_INTERVAL_S = 0.001


def _serve_moto(conn: Any) -> None:
    """In the moto process: start the server, send its port, serve until the parent says stop."""
    import logging
    import sys

    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    sys.setswitchinterval(MOTO_SWITCH_INTERVAL_S)
    # werkzeug logs every request to stderr; the local runtime shows its own progress instead.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    _list_moto_modules_once()
    _listings_from_one_snapshot()
    _retention_check_in_constant_time()
    _sqs_clock_from_time()
    _timestamps_parsed_by_fromisoformat()
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
    server.start()
    try:
        conn.send(server.get_host_and_port())
        conn.recv()  # any message, or EOF when the parent is gone: stop
    except (EOFError, OSError):
        pass
    finally:
        server.stop()


@contextmanager
def moto_server(startup_timeout_s: float = 120.0) -> Iterator[MotoHandle]:
    """Run moto's server on 127.0.0.1 and an OS-chosen free port for the duration of the block.

    It runs in its own process: moto does most of a local run's CPU work, and in the runtime's
    process it would share one interpreter lock with the Bedrock stand-in, the event sources and
    the ledger (a busy stand-in then answered late enough for clients to time out).
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_serve_moto, args=(child,), name="moto-server", daemon=True)
    process.start()
    child.close()
    try:
        if not parent.poll(startup_timeout_s):
            raise RuntimeError(f"the moto server did not start within {startup_timeout_s:g} s")
        host, port = parent.recv()
        yield MotoHandle(url=f"http://{host}:{port}")
    finally:
        with suppress(OSError):
            parent.send("stop")
        parent.close()
        process.join(timeout=15)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)


def endpoint_environment(moto_url: str, bedrock_url: str | None) -> dict[str, str]:
    """Environment that points every boto3 client at the loopback servers.

    With ``bedrock_url`` None (``--captioner bedrock``) the Bedrock runtime client keeps its real
    endpoint and the user's own credentials must be available to it: we then do not override
    credentials globally but give moto-bound services their own per-service endpoint only.
    """
    env = {
        "AWS_ENDPOINT_URL_S3": moto_url,
        "AWS_ENDPOINT_URL_SQS": moto_url,
        "AWS_ENDPOINT_URL_SSM": moto_url,
        "AWS_ENDPOINT_URL_CLOUDFORMATION": moto_url,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    if bedrock_url is not None:
        env["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] = bedrock_url
        env["AWS_ENDPOINT_URL_BEDROCK"] = bedrock_url  # the batch control plane (--mode batch)
        env.update(LOCAL_CREDENTIALS)
    else:
        env["AWS_DEFAULT_REGION"] = os.environ.get(
            "AWS_DEFAULT_REGION", os.environ.get("AWS_REGION", LOCAL_REGION)
        )
    return env
