"""boto3 clients for the operator commands, and AWS failures turned into one-line messages.

A fresh ``boto3.session.Session`` per command run: it reads ``AWS_PROFILE``, ``AWS_REGION`` (else
``AWS_DEFAULT_REGION`` or the profile's region), credentials and ``AWS_ENDPOINT_URL*`` from the
environment at that moment, like the AWS CLI does. Nothing here is cached across runs.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    SSOError,
    TokenRetrievalError,
)
from botocore.loaders import Loader

from imgcap.exits import EXIT_AWS, EXIT_FAILED, EXIT_OK, EXIT_USAGE

__all__ = ["EXIT_AWS", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "AwsClients", "OpsError", "explain"]

_EXPIRED = {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired"}
_REJECTED = {
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "InvalidToken",
}
_DENIED = {"AccessDenied", "AccessDeniedException", "AuthorizationError", "Forbidden", "403"}

CREDENTIALS_HELP = (
    "configure them with `aws configure` (or `aws sso login --profile NAME`) and set AWS_PROFILE, "
    "or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
)


class OpsError(Exception):
    """A failure the operator can fix; printed as one line, never as a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_access_denied(exc: ClientError) -> bool:
    code = error_code(exc)
    return code in _DENIED or code.startswith("AccessDenied")


def explain(exc: BaseException) -> OpsError | None:
    """The one-line explanation of an AWS/botocore failure, or None when it is not one."""
    if isinstance(exc, OpsError):
        return exc
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return OpsError(f"no usable AWS credentials found ({exc}): {CREDENTIALS_HELP}", exit_code=EXIT_AWS)
    if isinstance(exc, ProfileNotFound):
        return OpsError(f"{exc}: check AWS_PROFILE against the profiles in ~/.aws/config", exit_code=EXIT_AWS)
    if isinstance(exc, TokenRetrievalError | SSOError | CredentialRetrievalError):
        return OpsError(
            f"could not obtain AWS credentials ({exc}); refresh them: {CREDENTIALS_HELP}", exit_code=EXIT_AWS
        )
    if isinstance(exc, NoRegionError):
        return OpsError(
            "no AWS region configured: set AWS_REGION (or `region` in your AWS profile)", exit_code=EXIT_AWS
        )
    if isinstance(exc, ConnectionError):
        return OpsError(
            f"{exc}: check the network, AWS_REGION and any AWS_ENDPOINT_URL* setting", exit_code=EXIT_AWS
        )
    if isinstance(exc, ClientError):
        code = error_code(exc)
        op = exc.operation_name
        msg = str(exc.response.get("Error", {}).get("Message", "")).strip()
        if code in _EXPIRED:
            return OpsError(
                f"AWS credentials have expired ({code} in {op}); refresh them: {CREDENTIALS_HELP}",
                exit_code=EXIT_AWS,
            )
        if code in _REJECTED:
            return OpsError(
                f"AWS rejected the credentials ({code} in {op}): {CREDENTIALS_HELP}", exit_code=EXIT_AWS
            )
        if is_access_denied(exc):
            return OpsError(
                f"access denied for {op}: {msg or code} (check the IAM permissions of your identity)",
                exit_code=EXIT_AWS,
            )
        return OpsError(f"AWS error in {op}: {code}: {msg}", exit_code=EXIT_FAILED)
    if isinstance(exc, BotoCoreError):
        return OpsError(f"AWS client error: {exc}", exit_code=EXIT_FAILED)
    return None


_LOADER_LOCK = threading.Lock()
_SHARED: dict[str, Loader] = {}  # "loader" -> the one model loader of this process


def _fresh_botocore_session() -> botocore.session.Session:
    """A new botocore session (credentials, region, endpoints read now) sharing one model loader.

    Loading the service models (JSON) is most of what creating clients costs (about 1 s for the
    four clients a command uses on a busy machine, 0.1 s with the models cached); the models do not
    depend on the environment, so every run in a process reuses them.
    """
    session = botocore.session.Session()
    with _LOADER_LOCK:
        loader = _SHARED.get("loader")
        if loader is None:
            _SHARED["loader"] = session.get_component("data_loader")
        else:
            session.register_component("data_loader", loader)
            # boto3 appends its own data folder to the loader's search paths for each Session
            paths = loader.search_paths
            paths[:] = list(dict.fromkeys(paths))
    return session


class AwsClients:
    """Lazily created, thread-safe (boto3 clients are) clients from one session."""

    def __init__(self, max_pool_connections: int = 16) -> None:
        # botocore reads AWS_DEFAULT_REGION only; AWS_REGION (what the AWS CLI v2 and the SDKs of
        # other languages read first) is honoured here too, and wins like it does there.
        self._session = boto3.session.Session(
            region_name=os.environ.get("AWS_REGION") or None, botocore_session=_fresh_botocore_session()
        )
        self._config = Config(
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=max(10, max_pool_connections),
        )
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def region(self) -> str | None:
        return self._session.region_name

    def client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self._session.client(service, config=self._config)
            return self._clients[service]

    @property
    def s3(self) -> Any:
        return self.client("s3")

    @property
    def sqs(self) -> Any:
        return self.client("sqs")

    @property
    def ssm(self) -> Any:
        return self.client("ssm")

    @property
    def cloudformation(self) -> Any:
        return self.client("cloudformation")
