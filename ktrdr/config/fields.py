"""How a setting is declared: type, default, environment name, old names, secrecy, help.

Every other view of the configuration (loader, deprecation table, validation report,
``config show``, ``docs/configuration.md``) is generated from these declarations, so a
setting is described in exactly one place. This module must not read the environment.
"""

from __future__ import annotations

import datetime
import enum
import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from ktrdr.config.checks import Check
from ktrdr.config.mappings import ValueMap
from ktrdr.config.types import Secret

T = TypeVar("T")

_SPEC_KEY = "ktrdr"
FILE_SUFFIX = "_FILE"
MASK = "********"
PREFIX = "KTRDR_"


@attrs.frozen
class OldName:
    """A deprecated name whose old values also need a mapping (see ``ktrdr.config.mappings``)."""

    name: str
    values: ValueMap


def old(name: str, values: ValueMap) -> OldName:
    """Declare a deprecated name together with what its old values mean now."""
    return OldName(name, values)


@attrs.frozen
class Inference:
    """When the field is not set but ``when`` is, the field takes ``value`` (``reason`` says why).

    The system ktrdr replaces always used PostgreSQL, so a backend configured with a
    database host and no engine meant PostgreSQL, and still does.
    """

    when: str
    value: Any
    reason: str


def generation(name: str) -> int:
    """Precedence rank of an old name: ``KTRDR_``-prefixed names (0) before unprefixed (1)."""
    return 0 if name.startswith(PREFIX) else 1


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
    #: Check of the structured value (see ``ktrdr.config.checks``).
    check: Check | None = None
    #: Old name → what its old values mean now (a name absent here uses ``old_values``).
    value_maps: tuple[tuple[str, ValueMap], ...] = ()
    #: Old values still read, under any name (the current one included).
    old_values: ValueMap | None = None
    #: ``(field, value)``: the setting has an effect only while ``field`` has ``value``.
    applies_when: tuple[str, Any] | None = None
    #: The value this setting takes when another one is set and it is not.
    inferred: Inference | None = None


class InvalidSetting(ValueError):
    """A field's declared check refused a value while a settings object was built."""

    def __init__(self, owner: str, field: str, shown_value: str, expected: str) -> None:
        self.field = field
        self.expected = expected
        super().__init__(f"{owner}.{field}={shown_value}: {expected}")


@attrs.frozen
class _CheckValidator:
    """The attrs validator that runs a declared check (one mechanism, two callers)."""

    check: Check
    secret: bool

    def __call__(self, instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        try:
            self.check(value)
        except ValueError as exc:
            shown = format_value(value, secret=self.secret)
            raise InvalidSetting(type(instance).__name__, attribute.name, shown, str(exc)) from None


def setting(
    default: Any = attrs.NOTHING,
    *,
    help: str,
    deprecated: tuple[str | OldName, ...] = (),
    secret: bool = False,
    unit: str | None = None,
    insecure_default: bool = False,
    default_doc: str | None = None,
    check: Check | None = None,
    factory: Callable[[Any], Any] | None = None,
    old_values: ValueMap | None = None,
    applies_when: tuple[str, Any] | None = None,
    inferred: Inference | None = None,
) -> Any:
    """Declare a settings field; returns an ``attrs.field`` carrying a :class:`SettingSpec`.

    ``factory`` computes the default from the instance (fields declared earlier), for
    values such as the worker id that derive from other settings; ``default_doc``
    then says how it reads in the docs. ``deprecated`` lists old names, each a string
    or an :func:`old` name with its value mapping; ``old_values`` maps old values
    under every name. ``applies_when`` and ``inferred`` name another field of the class.
    """
    spec = SettingSpec(
        help=help,
        deprecated=tuple(o.name if isinstance(o, OldName) else o for o in deprecated),
        secret=secret,
        unit=unit,
        insecure_default=insecure_default,
        default_doc=default_doc,
        check=check,
        value_maps=tuple((o.name, o.values) for o in deprecated if isinstance(o, OldName)),
        old_values=old_values,
        applies_when=applies_when,
        inferred=inferred,
    )
    if factory is not None:
        default = attrs.Factory(factory, takes_self=True)
    return attrs.field(
        default=default,
        metadata={_SPEC_KEY: spec},
        validator=_CheckValidator(check, secret) if check is not None else None,
        repr=not secret,
    )


@attrs.frozen
class Declared:
    """One declared setting of one class, with the names it is read from."""

    owner: type[Any]
    attribute: attrs.Attribute[Any]
    spec: SettingSpec
    #: The environment variable: class prefix + field name, upper-cased, always.
    env: str
    #: ``env`` followed by the deprecated names, in precedence order: by generation,
    #: ``KTRDR_``-prefixed old names before unprefixed ones (declared order within one).
    names: tuple[str, ...]
    #: ``<env>_FILE``: a variable holding the path of a file holding the value.
    file_var: str
    #: Name → the value mapping its values go through (only names that have one).
    maps: Mapping[str, ValueMap] = attrs.field(factory=dict, eq=False)

    @property
    def name(self) -> str:
        """The field name in the settings class."""
        return self.attribute.name

    @property
    def derived(self) -> bool:
        """Whether the default is computed from other settings (worker id, public URL)."""
        return isinstance(self.attribute.default, attrs.Factory)  # type: ignore[arg-type]

    def check(self, value: Any) -> None:
        """Run the declared check; raises ``ValueError("expected ...")``."""
        if self.spec.check is not None:
            self.spec.check(value)

    def default_text(self) -> str:
        """The default as a person reads it (masked for secrets)."""
        if self.spec.default_doc is not None:
            return self.spec.default_doc
        default = self.attribute.default
        if default is attrs.NOTHING:
            return "(required)"
        if default is None:
            return "(unset)"
        if self.spec.secret:
            return "(insecure development value)" if self.spec.insecure_default else MASK
        return format_value(default)


def per_class(func: Callable[[type[Any]], T]) -> Callable[[type[Any]], T]:
    """Compute ``func(cls)`` once per class: tables derived from code, never from settings."""
    # mypy does not see ``type[...]`` as Hashable (python/mypy#11470); classes are.
    return functools.cache(func)  # type: ignore[return-value]


@per_class
def declared(cls: type[Any]) -> tuple[Declared, ...]:
    """Every declared setting of ``cls`` in declaration order (computed once per class)."""
    prefix: str = cls.PREFIX
    items = []
    for attribute in attrs.fields(attrs.resolve_types(cls)):
        spec = attribute.metadata.get(_SPEC_KEY)
        if spec is None:
            message = f"{cls.__name__}.{attribute.name} is not declared with setting()"
            raise TypeError(message)
        env = prefix + attribute.name.upper()
        names = (env, *sorted(spec.deprecated, key=generation))
        maps = dict(spec.value_maps)
        if spec.old_values is not None:
            maps = {name: maps.get(name, spec.old_values) for name in names}
        items.append(Declared(cls, attribute, spec, env, names, env + FILE_SUFFIX, maps))
    return tuple(items)


def format_value(value: Any, *, secret: bool = False) -> str:
    """Render a structured value the way a user would write it in the environment."""
    if secret or isinstance(value, Secret):
        return MASK
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.timedelta):
        return format_duration(value)
    if isinstance(value, enum.Enum):
        return str(value.value)
    if value is None:
        return ""
    return str(value)


def format_duration(value: datetime.timedelta) -> str:
    """``90s``, ``1.5s``, ``0.25s``: seconds, spelled so the duration parser reads it back."""
    seconds = value.total_seconds()
    if seconds.is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:.6f}".rstrip("0") + "s"
