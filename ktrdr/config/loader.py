"""``EnvLoader``: reads settings classes from an explicit environment mapping.

Built on environs: a small ``Env`` subclass reads the mapping it was given through
environs' value hook, and environs reads the dotenv file. The loader never touches
``os.environ`` unless it was handed ``os.environ``, and never writes to it. It
records where every value came from, collects every problem before reporting, and
notes each deprecated name used; it prints nothing (the entrypoint decides that).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

import attrs
import cattrs
from environs import Env

from ktrdr.config.converter import make_converter, structure
from ktrdr.config.fields import Declared, SettingsClass, declared, format_value
from ktrdr.errors import ConfigurationError

S = TypeVar("S")

DEFAULT_ENV_FILE = ".env.local"
FILE_SUFFIX = "_FILE"
_MAX_SECRET_FILE_BYTES = 64 * 1024


class SourceKind(str, enum.Enum):
    """Where a value came from, highest precedence first."""

    ENV = "env"
    DEPRECATED = "deprecated"
    SECRET_FILE = "file"  # noqa: S105 - a source kind, not a password
    DOTENV = "dotenv"
    DEFAULT = "default"


@attrs.frozen
class Source:
    """The origin of one loaded value: its kind and the variable that supplied it."""

    kind: SourceKind
    variable: str | None = None

    def describe(self) -> str:
        """A short human description, e.g. ``env WORKER_PORT (deprecated)``."""
        if self.kind is SourceKind.DEFAULT:
            return "default"
        if self.kind is SourceKind.DEPRECATED:
            return f"env {self.variable} (deprecated)"
        return f"{self.kind.value} {self.variable}"


@attrs.frozen
class Problem:
    """One reason the configuration cannot be used, in the user's terms."""

    variable: str
    shown_value: str | None
    expected: str

    def __str__(self) -> str:
        if self.shown_value is None:
            return f"{self.variable}: {self.expected}"
        return f"{self.variable}={self.shown_value!r}: {self.expected}"


@attrs.frozen
class DeprecatedUse:
    """A deprecated name found set, and what happened to its value."""

    old: str
    new: str
    #: The variable whose value was used instead (None: the old name's value was used).
    ignored_for: str | None = None
    values_differ: bool = False


@attrs.frozen
class LoadResult(Generic[S]):
    """The outcome of loading one settings class: a value or problems, never both."""

    settings: S | None
    sources: Mapping[str, Source]
    problems: tuple[Problem, ...]
    deprecations: tuple[DeprecatedUse, ...]


class _MappingEnv(Env):
    """environs ``Env`` that reads a given mapping instead of ``os.environ``.

    ``Env._get_value`` is environs' single lookup hook (environs 15); a test pins it
    so that an environs upgrade that moves the hook fails loudly.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        super().__init__(eager=True, expand_vars=False)
        self._mapping = environ

    def _get_value(self, env_key: str, default: Any) -> Any:
        try:
            return self._mapping[env_key]
        except KeyError:
            return self._environ.get(env_key, default)

    def dotenv_values(self) -> Mapping[str, str]:
        """What the dotenv file defined (empty when none was read)."""
        return self._environ


class EnvLoader:
    """Loads settings classes from ``environ`` plus an optional dotenv file.

    Precedence, highest first: the new variable, its deprecated names (in declared
    order), ``<NEW>_FILE`` (a file holding the value), the dotenv file (new name, then
    deprecated names), the declared default.
    """

    def __init__(
        self,
        environ: Mapping[str, str],
        *,
        env_file: str | Path | None = DEFAULT_ENV_FILE,
        converter: cattrs.Converter | None = None,
    ) -> None:
        self._environ = environ
        self._env = _MappingEnv(environ)
        self._converter = converter if converter is not None else make_converter()
        self.env_file = Path(env_file) if env_file is not None else None
        self.file_problems: tuple[Problem, ...] = ()
        if self.env_file is not None:
            self.file_problems = self._read_env_file(self.env_file)
        self._dotenv = self._env.dotenv_values()

    def _read_env_file(self, path: Path) -> tuple[Problem, ...]:
        if not path.exists():
            return ()  # zero configuration: the dotenv file is optional
        try:
            self._env.read_env(path, recurse=False, override=False)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            message = f"expected a readable dotenv file ({reason})"
            return (Problem(str(path), None, message),)
        return ()

    def names_set(self) -> set[str]:
        """Every variable name visible to this loader (environment and dotenv file)."""
        return set(self._environ) | set(self._dotenv)

    def raw(self, name: str) -> str | None:
        """The raw string of ``name`` through environs' hook (environment, then dotenv)."""
        value = self._env.str(name, None)
        return None if value is None else str(value)

    def load(self, cls: type[S]) -> S:
        """Load ``cls`` or raise ``ConfigurationError`` listing every problem."""
        result = self.load_result(cls)
        problems = self.file_problems + result.problems
        if problems:
            raise ConfigurationError([str(p) for p in problems])
        assert result.settings is not None
        return result.settings

    def load_result(self, cls: type[S]) -> LoadResult[S]:
        """Load ``cls``, collecting problems, sources and deprecated names used."""
        values: dict[str, Any] = {}
        sources: dict[str, Source] = {}
        problems: list[Problem] = []
        deprecations: list[DeprecatedUse] = []
        settings_cls: type[SettingsClass] = cls  # type: ignore[assignment]
        for item in declared(settings_cls):
            found = self._lookup(item, deprecations)
            if isinstance(found, Problem):
                problems.append(found)
                continue
            if found is None:
                sources[item.name] = Source(SourceKind.DEFAULT)
                continue
            raw, source = found
            value_or_problem = self._structure(item, raw, source)
            if isinstance(value_or_problem, Problem):
                problems.append(value_or_problem)
                continue
            values[item.name] = value_or_problem
            sources[item.name] = source
        settings: S | None = None
        if not problems:
            settings, derived_problems = self._construct(cls, settings_cls, values, sources)
            problems.extend(derived_problems)
        return LoadResult(settings, sources, tuple(problems), tuple(deprecations))

    def _construct(
        self,
        cls: type[S],
        settings_cls: type[SettingsClass],
        values: dict[str, Any],
        sources: Mapping[str, Source],
    ) -> tuple[S | None, list[Problem]]:
        """Build the instance; a computed default that fails its check is reported too."""
        try:
            return cls(**values), []
        except ValueError as exc:
            for item in declared(settings_cls):
                if item.name in values or item.spec.check is None:
                    continue
                default = item.attribute.default
                if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                    return None, [Problem(item.env, None, f"derived default invalid: {exc}")]
            return None, [Problem(settings_cls.__name__, None, str(exc))]

    def _lookup(
        self, item: Declared, deprecations: list[DeprecatedUse]
    ) -> tuple[str, Source] | Problem | None:
        """Find the winning raw value of one setting across all layers."""
        candidates: list[tuple[str, Source]] = []
        for name, kind in self._names_in_order(item):
            raw = self._value_in_layer(name, kind)
            if raw is not None:
                candidates.append((raw, Source(kind, name)))
        file_var = item.env + FILE_SUFFIX
        file_path = self._environ.get(file_var, self._dotenv.get(file_var))
        if file_path is not None:
            from_file = self._read_value_file(item, file_var, file_path)
            if isinstance(from_file, Problem):
                return from_file
            position = sum(1 for _, s in candidates if s.kind is not SourceKind.DOTENV)
            candidates.insert(position, (from_file, Source(SourceKind.SECRET_FILE, file_var)))
        if not candidates:
            return None
        winner_raw, winner = candidates[0]
        for raw, source in candidates:
            if source.variable is None or source.variable not in item.spec.deprecated:
                continue
            if source is winner:
                deprecations.append(DeprecatedUse(source.variable, item.env))
            else:
                deprecations.append(
                    DeprecatedUse(
                        source.variable,
                        item.env,
                        ignored_for=winner.variable,
                        values_differ=raw.strip() != winner_raw.strip(),
                    )
                )
        return winner_raw, winner

    def _names_in_order(self, item: Declared) -> Iterable[tuple[str, SourceKind]]:
        yield item.env, SourceKind.ENV
        for old in item.spec.deprecated:
            yield old, SourceKind.DEPRECATED
        yield item.env, SourceKind.DOTENV
        for old in item.spec.deprecated:
            yield old, SourceKind.DOTENV

    def _value_in_layer(self, name: str, kind: SourceKind) -> str | None:
        if kind is SourceKind.DOTENV:
            return None if name in self._environ else self._dotenv.get(name)
        return self.raw(name) if name in self._environ else None

    def _read_value_file(self, item: Declared, file_var: str, file_path: str) -> str | Problem:
        path = Path(file_path.strip()) if "\x00" not in file_path else None
        reason: str | None = None
        if path is None or not file_path.strip():
            reason = "expected the path of a readable file holding the value"
        elif not path.exists():
            reason = "file not found; expected the path of a readable file holding the value"
        elif path.is_dir():
            reason = "is a directory; expected the path of a readable file holding the value"
        else:
            try:
                with path.open("rb") as handle:
                    data = handle.read(_MAX_SECRET_FILE_BYTES + 1)
                if len(data) > _MAX_SECRET_FILE_BYTES:
                    reason = f"file is larger than {_MAX_SECRET_FILE_BYTES} bytes"
                else:
                    return data.decode("utf-8")
            except UnicodeDecodeError:
                reason = "file is not UTF-8 text"
            except OSError as exc:
                reason = f"cannot read the file ({exc.strerror or 'I/O error'})"
        return Problem(file_var, file_path, reason)

    def _structure(self, item: Declared, raw: str, source: Source) -> Any:
        """Structure and check one value; a ``Problem`` names the variable actually set."""
        variable = source.variable or item.env
        try:
            value = structure(self._converter, raw, item.attribute.type)
            if item.spec.check is not None:
                item.spec.check(value)
        except ValueError as exc:
            shown: str | None = format_value(raw, secret=item.spec.secret)
            if source.kind is SourceKind.SECRET_FILE:
                shown = None if item.spec.secret else raw.strip()
            return Problem(variable, shown, str(exc))
        return value
