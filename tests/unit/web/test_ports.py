"""ensure_bindable: a taken port is a configuration error naming the variable."""

from __future__ import annotations

import socket

import pytest

from ktrdr.errors import ConfigurationError
from ktrdr.web import ensure_bindable


def test_free_port_passes() -> None:
    """A port nothing listens on can be bound: no error."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ensure_bindable("127.0.0.1", port, variable="KTRDR_WORKER_PORT")


def test_taken_port_names_the_variable_and_the_address() -> None:
    """A listening socket on the port: the report names the variable, port and address."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigurationError) as caught:
            ensure_bindable("127.0.0.1", port, variable="KTRDR_WORKER_PORT")
    assert caught.value.problems == (
        f"KTRDR_WORKER_PORT={port}: cannot listen on 127.0.0.1:{port} (Address already in use);"
        " stop the process using it or choose another port",
    )
