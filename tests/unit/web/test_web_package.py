"""The public surface of ktrdr.web (a change here is a deliberate API change)."""

from __future__ import annotations

import ktrdr.web


def test_public_names_are_pinned() -> None:
    """ktrdr.web exports exactly these names, and each one exists."""
    assert sorted(ktrdr.web.__all__) == [
        "ApiError",
        "BearerAuth",
        "BearerAuthMiddleware",
        "BodyLimitMiddleware",
        "BodyTooLarge",
        "EXIT_SIGNALS",
        "ExitSignals",
        "GracefulServer",
        "backend_error",
        "bearer_headers",
        "describe_error",
        "describe_validation_errors",
        "ensure_bindable",
        "error_code",
        "error_response",
        "install_error_handlers",
        "install_json_error_handlers",
        "read_error_body",
        "read_model",
    ]
    assert all(hasattr(ktrdr.web, name) for name in ktrdr.web.__all__)
