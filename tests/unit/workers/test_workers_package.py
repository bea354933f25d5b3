"""The public surface of ktrdr.workers (a change here is a deliberate API change)."""

from __future__ import annotations

import pytest

import ktrdr.workers


def test_public_names_are_pinned() -> None:
    """ktrdr.workers exports exactly these names, and each one exists."""
    assert sorted(ktrdr.workers.__all__) == [
        "BackendClient",
        "Backoff",
        "CheckpointStore",
        "Delivery",
        "JobHost",
        "JobLauncher",
        "Outbox",
        "OutboxEntry",
        "OutcomeDelivery",
        "RunningJob",
        "Worker",
        "config_fingerprint",
        "registration_backoff",
    ]
    assert all(hasattr(ktrdr.workers, name) for name in ktrdr.workers.__all__)
    assert set(ktrdr.workers.__all__) <= set(dir(ktrdr.workers))


def test_an_unknown_name_is_an_attribute_error() -> None:
    """The lazy loading of public names does not invent others."""
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        ktrdr.workers.Nothing  # noqa: B018 - the attribute access is the test
