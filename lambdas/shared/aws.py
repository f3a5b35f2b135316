"""boto3 client factories: plain clients, one per service per execution environment.

Endpoints are never configured here: locally ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>``
point boto3 at the loopback servers, in Lambda the defaults apply.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

from lambdas.shared.contract import CONNECT_TIMEOUT_S

__all__ = ["CONNECT_TIMEOUT_S", "client"]


@cache
def client(service: str, max_attempts: int = 3, read_timeout: float = 60.0) -> Any:
    config = Config(
        # total_max_attempts counts the first call too (max_attempts would mean retries).
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
        read_timeout=read_timeout,
        connect_timeout=CONNECT_TIMEOUT_S,
        tcp_keepalive=True,
    )
    return boto3.session.Session().client(service, config=config)
