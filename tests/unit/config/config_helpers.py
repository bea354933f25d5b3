"""Shared helpers of the configuration tests (imported as ``config_helpers``).

Environments are plain dicts handed to ``validate_all``; no test touches os.environ.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from ktrdr.config import ConfigurationError, validate_all
from ktrdr.config.bundles import AnyConfig, Component

#: A production configuration that passes every check (secrets set, nothing unknown).
#: The database is the default SQLite file, so no database password is set (it would
#: have no effect, an error in production).
PRODUCTION = {
    "KTRDR_ENV": "production",
    "KTRDR_AUTH_WORKER_TOKEN": "prod-token-8c1f",
    "KTRDR_AUTH_OPERATOR_TOKEN": "prod-operator-token-3d9e",
}
#: The same on PostgreSQL, with its password.
PRODUCTION_POSTGRESQL = {
    **PRODUCTION,
    "KTRDR_DB_ENGINE": "postgresql",
    "KTRDR_DB_PASSWORD": "prod-password-77aa",
}


def load(component: Component, environ: Mapping[str, str], **kwargs: Any) -> Any:
    """``validate_all`` with no dotenv file unless a test passes one."""
    kwargs.setdefault("env_file", None)
    config: AnyConfig = validate_all(component, environ, **kwargs)
    return config


def problems_of(component: Component, environ: Mapping[str, str], **kwargs: Any) -> list[str]:
    """The problem lines ``validate_all`` raises for ``environ``."""
    with pytest.raises(ConfigurationError) as caught:
        load(component, environ, **kwargs)
    return list(caught.value.problems)


def refusal(func: Callable[..., object], *args: object) -> str:
    """The message of the ValueError ``func(*args)`` raises; each starts with "expected"."""
    with pytest.raises(ValueError, match=r"^expected ") as caught:
        func(*args)
    return str(caught.value)
