"""The environment variables of declared settings, for code outside this package.

A message that tells a user which variable to change, or code that sets a child's
environment, asks here instead of spelling ``KTRDR_*`` by hand, so renaming a field
renames every message with it. Callers name the field through ``attrs.fields``::

    env_name(attrs.fields(WorkerSettings).port)  # "KTRDR_WORKER_PORT"

so a misspelt field is a mypy error and an ``AttributeError`` on import, never a
silently wrong message. This module reads no environment.
"""

from __future__ import annotations

import functools
from typing import Any

import attrs

from ktrdr.config.fields import Declared, declared
from ktrdr.config.settings import ALL_SETTINGS

__all__ = ["all_env_names", "env_name"]


@functools.cache
def _by_attribute() -> dict[int, Declared]:
    """``id(attribute)`` → its declaration, over every class in ``ALL_SETTINGS``."""
    return {id(item.attribute): item for cls in ALL_SETTINGS for item in declared(cls)}


def _declaration(field: attrs.Attribute[Any]) -> Declared:
    """The declaration of ``field``; ``ValueError`` unless it belongs to a settings class."""
    item = _by_attribute().get(id(field))
    if item is None or item.attribute is not field:
        message = (
            f"{field.name!r} is not a field of a settings class in ALL_SETTINGS; "
            "pass attrs.fields(<SettingsClass>).<field>"
        )
        raise ValueError(message)
    return item


def env_name(field: attrs.Attribute[Any]) -> str:
    """The variable that sets ``field``: ``attrs.fields(APISettings).port`` → ``KTRDR_API_PORT``."""
    return _declaration(field).env


def all_env_names(field: attrs.Attribute[Any]) -> tuple[str, ...]:
    """Every variable the loader reads ``field`` from: current, deprecated, ``<NAME>_FILE``."""
    item = _declaration(field)
    return (*item.names, item.file_var)
