"""How a setting is declared: type, default, environment name, old names, secrecy, help.

Every other view of the configuration (loader, deprecation table, validation report,
``config show``, ``docs/configuration.md``) is generated from these declarations, so a
setting is described in exactly one place. This module must not read the environment.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Protocol

import attrs

from ktrdr.config.types import Secret

_SPEC_KEY = "ktrdr"


@attrs.frozen(kw_only=True)
class SettingSpec:
    """What the declaration says about one setting, besides its Python type and default."""

    help: str
    deprecated: tuple[str, ...] = ()
    secret: bool = False
    unit: str | None = None
    #: The default is for local development only; using it in production is an error.
    insecure_default: bool = False
    #: How the default reads in docs when it is computed from other settings.
    default_doc: str | None = None
    #: Check of the structured value; raises ValueError with the expectation as message.
    check: Callable[[Any], None] | None = None


def setting(
    default: Any = attrs.NOTHING,
    *,
    help: str,
    deprecated: tuple[str, ...] = (),
    secret: bool = False,
    unit: str | None = None,
    insecure_default: bool = False,
    default_doc: str | None = None,
    check: Callable[[Any], None] | None = None,
    factory: Callable[[Any], Any] | None = None,
) -> Any:
    """Declare a settings field; returns an ``attrs.field`` carrying a :class:`SettingSpec`.

    ``factory`` computes the default from the instance (fields declared earlier), for
    values such as the worker id that derive from other settings.
    """
    spec = SettingSpec(
        help=help,
        deprecated=deprecated,
        secret=secret,
        unit=unit,
        insecure_default=insecure_default,
        default_doc=default_doc,
        check=check,
    )

    def _validate(_instance: object, _attribute: attrs.Attribute[Any], value: Any) -> None:
        if check is not None:
            check(value)

    if factory is not None:
        default = attrs.Factory(factory, takes_self=True)
    return attrs.field(
        default=default,
        metadata={_SPEC_KEY: spec},
        validator=_validate if check is not None else None,
        repr=not secret,
    )


class SettingsClass(Protocol):
    """A frozen attrs settings class with an environment prefix."""

    PREFIX: ClassVar[str]
    __attrs_attrs__: ClassVar[tuple[attrs.Attribute[Any], ...]]


@attrs.frozen
class Declared:
    """One declared setting of one class, with the names it is read from."""

    owner: type[SettingsClass]
    attribute: attrs.Attribute[Any]
    spec: SettingSpec

    @property
    def name(self) -> str:
        """The field name in the settings class."""
        return self.attribute.name

    @property
    def env(self) -> str:
        """The environment variable: class prefix + field name, upper-cased, always."""
        return self.owner.PREFIX + self.attribute.name.upper()

    @property
    def has_default(self) -> bool:
        return self.attribute.default is not attrs.NOTHING

    def default_text(self) -> str:
        """The default as a person reads it (masked for secrets)."""
        if self.spec.default_doc is not None:
            return self.spec.default_doc
        default = self.attribute.default
        if default is attrs.NOTHING:
            return "(required)"
        if default is None:
            return "(unset)"
        return format_value(default, secret=self.spec.secret)


def declared(cls: type[SettingsClass]) -> Iterator[Declared]:
    """Yield every declared setting of ``cls`` in declaration order."""
    for attribute in attrs.fields(cls):
        spec = attribute.metadata.get(_SPEC_KEY)
        if spec is None:
            message = f"{cls.__name__}.{attribute.name} is not declared with setting()"
            raise TypeError(message)
        yield Declared(cls, attribute, spec)


MASK = "********"


def format_value(value: Any, *, secret: bool = False) -> str:
    """Render a structured value the way a user would write it in the environment."""
    if secret or isinstance(value, Secret):
        return MASK
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
        return f"{seconds:g}s"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if value is None:
        return ""
    return str(value)
