"""Fixtures shared by every tier. No test may reach a real AWS endpoint."""

from __future__ import annotations

import os

import pytest

# Fake credentials for moto / the loopback servers, set before any boto3 client is created.
_FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "ImageCaptioning",
}
for _name, _value in _FAKE_AWS.items():
    os.environ.setdefault(_name, _value)
# A developer's own profile or endpoints must never leak into tests.
for _name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
    os.environ.pop(_name, None)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pin fake credentials and drop endpoint overrides for a moto ``mock_aws`` test."""
    for name, value in _FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL"):
            monkeypatch.delenv(name, raising=False)
