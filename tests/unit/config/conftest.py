"""Fixtures of the configuration tests."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture
def hostname() -> str:
    """This machine's host name, as the derived defaults use it."""
    return socket.gethostname()
