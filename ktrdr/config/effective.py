"""The effective configuration as rows: variable, value (secrets masked), source.

``ktrdr config show`` renders these rows as a table or JSON; nothing here prints.
"""

from __future__ import annotations

import attrs

from ktrdr.config.bundles import AnyConfig, settings_of
from ktrdr.config.fields import declared, format_value
from ktrdr.config.results import Source


@attrs.frozen
class EffectiveValue:
    """One setting as the process will use it."""

    variable: str
    #: The value as it would be written in the environment; ``********`` for secrets.
    value: str
    source: Source
    secret: bool
    help: str


def effective_values(config: AnyConfig) -> list[EffectiveValue]:
    """Every setting of ``config`` in declaration order, secrets masked."""
    rows = []
    for settings in settings_of(config).values():
        for item in declared(type(settings)):
            rows.append(
                EffectiveValue(
                    variable=item.env,
                    value=format_value(getattr(settings, item.name), secret=item.spec.secret),
                    source=config.report.sources[item.env],
                    secret=item.spec.secret,
                    help=item.spec.help,
                )
            )
    return rows
