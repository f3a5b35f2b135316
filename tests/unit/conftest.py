"""The unit tier runs without sockets: any attempt to open a network connection fails the test.

Unit tests use in-memory fakes (``tests/fakes.py``); moto and the loopback servers belong to the
integration and end-to-end tiers. Local (AF_UNIX) sockets and pseudo-terminals stay allowed.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest


class NetworkBlocked(RuntimeError):
    """A unit test tried to reach the network."""


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise NetworkBlocked(f"unit tests may not open network connections (to {address!r})")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded)
