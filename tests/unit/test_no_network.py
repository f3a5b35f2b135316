"""The unit tier's socket guard (tests/unit/conftest.py) really refuses network connections."""

from __future__ import annotations

import socket

import boto3
import pytest

from tests.unit.conftest import NetworkBlocked

pytestmark = pytest.mark.unit


def test_given_a_unit_test_when_it_connects_over_tcp_then_it_fails():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, pytest.raises(NetworkBlocked):
        s.connect(("127.0.0.1", 9))
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


def test_given_a_unit_test_when_boto3_calls_an_endpoint_then_it_fails_before_any_request():
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")
    # botocore wraps the guard's error in its own client error, naming it
    with pytest.raises(Exception, match="unit tests may not open network connections"):
        s3.list_buckets()


def test_given_a_unit_test_then_local_socket_pairs_still_work():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"x")
        assert b.recv(1) == b"x"
