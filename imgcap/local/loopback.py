"""The loopback servers a local run talks to (moto, the Bedrock stand-in) and its boto3 clients."""

from __future__ import annotations

import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

from imgcap.local.options import LocalOptions
from imgcap.local.provision import LocalStack
from imgcap.local.servers import LOCAL_CREDENTIALS, LOCAL_REGION, endpoint_environment, moto_server
from imgcap.local.standin import BedrockStandin, StandinConfig


def client_factory(moto_url: str) -> Callable[..., Any]:
    """``make("s3")`` and so on: clients for the moto server with the local credentials."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=LOCAL_CREDENTIALS["AWS_SESSION_TOKEN"],
        region_name=LOCAL_REGION,
    )
    config = Config(retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=32)

    def make(service: str, endpoint_url: str | None = None) -> Any:
        return session.client(service, endpoint_url=endpoint_url or moto_url, config=config)

    return make


def listing_client(moto_url: str) -> Any:
    """An S3 client for the ledger, which re-lists whole prefixes every poll and needs only keys
    and ETags: timestamps stay text instead of going through dateutil (~10% of a large local
    run's CPU, py-spy)."""
    import boto3
    import botocore.session
    from botocore.config import Config

    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
    session = boto3.session.Session(
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=LOCAL_CREDENTIALS["AWS_SESSION_TOKEN"],
        region_name=LOCAL_REGION,
        botocore_session=core,
    )
    config = Config(retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=32)
    return session.client("s3", endpoint_url=moto_url, config=config)


def _reset_moto(moto_url: str) -> None:
    """Start from empty backends: moto keeps its state per process, across server instances."""
    request = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback moto server
        response.read()


@contextmanager
def servers(options: LocalOptions) -> Iterator[tuple[str, BedrockStandin | None]]:
    """moto (emptied) and, for ``--captioner standin``, the stand-in: (moto URL, stand-in or None)."""
    with ExitStack() as stack:
        moto = stack.enter_context(moto_server())
        _reset_moto(moto.url)
        standin: BedrockStandin | None = None
        if options.captioner == "standin":
            config = StandinConfig(
                rpm=options.rpm,
                tpm=options.tpm,
                window_s=options.quota_window_s,
                latency=options.standin_latency,
                faults=options.faults,
                # the client gives up first
                timeout_hold_s=min(60.0, options.effective_tuning.bedrock_read_timeout_s + 5.0),
                seed=options.standin_seed,
            )
            standin = stack.enter_context(BedrockStandin(config).serve())
        yield moto.url, standin


def keep_running(
    say: Callable[[str], None],
    moto_url: str,
    standin: BedrockStandin | None,
    stack: LocalStack,
    tick: Callable[[], None] | None = None,
    extra_env: dict[str, str] | None = None,
) -> None:
    """``--keep-running``: print the endpoint environment, then call ``tick`` every second (it
    follows new uploads) until Ctrl-C or SIGTERM."""
    env = {**endpoint_environment(moto_url, standin.url if standin else None), **(extra_env or {})}
    lines = [f"export {k}={v}" for k, v in sorted(env.items())]
    say(
        "Servers and functions are still running: new uploads are processed too (Ctrl-C to stop).\n"
        "In another shell:\n  " + "\n  ".join(lines) + f"\n  imgcap status --stack-name {stack.stack_name}"
    )

    def stop_on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    with suppress(ValueError):  # only the main thread may set handlers; elsewhere Ctrl-C alone works
        signal.signal(signal.SIGTERM, stop_on_term)
    try:
        while True:
            time.sleep(1.0)
            if tick is not None:
                tick()
    except KeyboardInterrupt:
        say("stopping")
