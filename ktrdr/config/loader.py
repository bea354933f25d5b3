"""``EnvLoader``: reads settings classes from an explicit environment mapping.

Built on environs: environs reads the dotenv file, through a small ``Env`` subclass
whose value hook reads the mapping the loader was given, then the file. The loader
reads the same two layers, the mapping first. It never touches ``os.environ``
unless it was handed ``os.environ``, and never writes to it. environs (and the
marshmallow it imports, about a tenth of a worker's start) is imported only when a
dotenv file is read: a process configured by its environment alone never loads it. It
records where every value came from, collects every problem before reporting, and
notes each deprecated name used (in the records of ``ktrdr.config.results``, which
it re-exports); it prints nothing (the entrypoint decides that).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from ktrdr.config.converter import Converter, expectation, structure, structure_hook
from ktrdr.config.fields import (
    FILE_SUFFIX,
    Declared,
    InvalidSetting,
    declared,
    format_value,
    per_class,
)
from ktrdr.config.mappings import Ignored
from ktrdr.config.results import (
    DeprecatedUse,
    IgnoredValue,
    LoadResult,
    Problem,
    Source,
    SourceKind,
)
from ktrdr.config.value_files import read_value_file
from ktrdr.errors import ConfigurationError

if TYPE_CHECKING:
    from environs import Env

S = TypeVar("S")

DEFAULT_ENV_FILE = ".env.local"

__all__ = [
    "DEFAULT_ENV_FILE",
    "FILE_SUFFIX",
    "DeprecatedUse",
    "EnvLoader",
    "IgnoredValue",
    "LoadResult",
    "Problem",
    "Source",
    "SourceKind",
]


@functools.cache
def mapping_env() -> Callable[[Mapping[str, str]], Env]:
    """The environs ``Env`` subclass that reads a given mapping instead of ``os.environ``.

    environs is imported here, the first time a dotenv file is read. environs 15
    looks a variable up with ``Env._get_from_environ`` (its overridable lookup,
    environs#51), which reads through ``Env._get_value`` (here: the mapping, then
    what ``read_env`` loaded into ``Env._environ``); it loads a dotenv file with
    ``Env._load_dotenv``. Tests pin these hooks so that an environs upgrade that
    moves them fails loudly.
    """
    from dotenv import dotenv_values
    from environs import Env

    class MappingEnv(Env):
        def __init__(self, environ: Mapping[str, str]) -> None:
            super().__init__(eager=True, expand_vars=False)
            self._mapping = environ

        def _get_value(self, env_key: str, default: Any) -> Any:
            try:
                return self._mapping[env_key]
            except KeyError:
                return self._environ.get(env_key, default)

        def _load_dotenv(self, path: str | Path, *, override: bool = False) -> None:
            # environs' own version lets python-dotenv expand ``${VAR}`` from os.environ;
            # values are taken literally here, so only the given mapping is ever consulted.
            for key, value in dotenv_values(path, interpolate=False).items():
                if value is not None and (override or key not in self._environ):
                    self._environ[key] = value

    return MappingEnv


@per_class
def _names_of(cls: type[Any]) -> frozenset[str]:
    """Every variable ``cls`` reads: new names, deprecated names, ``_FILE`` forms."""
    return frozenset(name for item in declared(cls) for name in (*item.names, item.file_var))


@per_class
def _declaration_order(cls: type[Any]) -> Mapping[str, int]:
    """Every variable ``cls`` reads → the position of its setting in ``declared(cls)``."""
    return {
        name: index
        for index, item in enumerate(declared(cls))
        for name in (*item.names, item.file_var)
    }


@per_class
def _structure_hooks(cls: type[Any]) -> Mapping[str, Callable[[str], Any]]:
    """Field name → the function structuring its raw strings (resolved once per class)."""
    return {item.name: structure_hook(item.attribute.type) for item in declared(cls)}


@per_class
def _inferring(cls: type[Any]) -> tuple[tuple[Declared, Declared], ...]:
    """``(item, trigger)`` for each setting of ``cls`` that can be inferred from another."""
    items = {item.name: item for item in declared(cls)}
    return tuple(
        (item, items[item.spec.inferred.when])
        for item in items.values()
        if item.spec.inferred is not None
    )


@per_class
def _default_sources(cls: type[Any]) -> Mapping[str, Source]:
    """Field name → the source of its default (derived defaults say how they read)."""
    return {
        item.name: Source(
            SourceKind.DEFAULT, detail=item.spec.default_doc if item.derived else None
        )
        for item in declared(cls)
    }


def _all_defaults(cls: type[S]) -> LoadResult[S]:
    """The result of loading ``cls`` with nothing set: every value its default.

    Built once per class (a frozen object and its read-only sources, shared) unless a
    default is derived from other settings or the host, which is computed each time.
    """
    if _has_derived_default(cls):
        settings, problems = _construct(cls, {})
        return LoadResult(settings, dict(_default_sources(cls)), tuple(problems), (), ())
    return _shared_defaults(cls)


@per_class
def _has_derived_default(cls: type[Any]) -> bool:
    """Whether a default of ``cls`` is computed from other settings or the host."""
    return any(item.derived for item in declared(cls))


@per_class
def _shared_defaults(cls: type[Any]) -> LoadResult[Any]:
    """:func:`_all_defaults` of a class whose defaults are all constants."""
    settings, problems = _construct(cls, {})
    return LoadResult(
        settings, MappingProxyType(dict(_default_sources(cls))), tuple(problems), (), ()
    )


class EnvLoader:
    """Loads settings classes from ``environ`` plus an optional dotenv file.

    Precedence, highest first: the new variable, its deprecated names (by generation:
    ``KTRDR_``-prefixed before unprefixed), ``<NEW>_FILE`` (a file holding the value),
    the dotenv file (same order), the declared default. Only variables that are
    actually set are read (through environs) and structured (through the converter).
    A value mapping declared for a name applies first; a value that carries no setting
    (an old label) is reported and skipped, so the next name down decides.

    Values are structured by the project's hooks (``ktrdr.config.converter``), each
    resolved once per process; a ``converter`` given here is used instead.
    """

    def __init__(
        self,
        environ: Mapping[str, str],
        *,
        env_file: str | Path | None = DEFAULT_ENV_FILE,
        converter: Converter | None = None,
    ) -> None:
        self._environ = environ
        self._dotenv: Mapping[str, str] = {}
        self._converter = converter
        self.env_file = Path(env_file) if env_file is not None else None
        self.file_problems: tuple[Problem, ...] = ()
        if self.env_file is not None:
            self.file_problems = self._read_env_file(self.env_file)
        # Names are listed once; values are read only for names set.
        self._env_names = frozenset(environ)
        self._names = self._env_names.union(self._dotenv)

    def _read_env_file(self, path: Path) -> tuple[Problem, ...]:
        try:
            if not path.exists():
                return ()  # zero configuration: the dotenv file is optional
            env = mapping_env()(self._environ)
            env.read_env(path, recurse=False, override=False)
            self._dotenv = env._environ
        except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            message = f"expected a readable UTF-8 dotenv file ({reason})"
            return (Problem(str(path), None, message),)
        return ()

    def _raw(self, name: str) -> str:
        """The string of a variable that is set: the mapping's, else the dotenv file's.

        The order of ``mapping_env()``'s value hook, without its wrapping: environs'
        typed parsers (``env.str``...) build a marshmallow field per call, and the
        converter does all parsing here.
        """
        try:
            return str(self._environ[name])
        except KeyError:
            return str(self._dotenv[name])

    def names_set(self) -> frozenset[str]:
        """Every variable name visible to this loader (environment and dotenv file)."""
        return self._names

    def in_dotenv_only(self, name: str) -> bool:
        """Whether ``name`` comes from the dotenv file (and not the environment)."""
        return name in self._dotenv and name not in self._env_names

    def raw(self, name: str) -> str | None:
        """The raw string of ``name`` through environs' hook (environment, then dotenv)."""
        if name not in self._names:
            return None
        return self._raw(name)

    def load(self, cls: type[S]) -> S:
        """Load ``cls`` or raise ``ConfigurationError`` listing every problem."""
        result = self.load_result(cls)
        problems = self.file_problems + result.problems
        if problems:
            raise ConfigurationError([str(p) for p in problems])
        assert result.settings is not None  # no problems means a value
        return result.settings

    def load_result(
        self, cls: type[S], *, entrypoint: Mapping[str, Any] | None = None
    ) -> LoadResult[S]:
        """Load ``cls``, collecting problems, sources and deprecated names used.

        ``entrypoint`` holds values the entrypoint fixes (the worker type): they
        replace the default, and a variable may repeat them but not contradict them.
        """
        present = _names_of(cls) & self._names
        if not present and not entrypoint:
            return _all_defaults(cls)
        values: dict[str, Any] = dict(entrypoint or {})
        sources = dict(_default_sources(cls))
        for name in values:
            sources[name] = Source(SourceKind.ENTRYPOINT)
        problems: list[Problem] = []
        deprecations: list[DeprecatedUse] = []
        ignored: list[IgnoredValue] = []
        if present:
            # Only the settings whose variables are set, in declaration order.
            order = _declaration_order(cls)
            items = declared(cls)
            for index in sorted({order[name] for name in present}):
                self._load_item(items[index], values, sources, problems, deprecations, ignored)
            for item, trigger in _inferring(cls):
                self._infer(item, trigger, values, sources)
        settings: S | None = None
        if not problems:
            settings, construct_problem = _construct(cls, values)
            problems.extend(construct_problem)
        return LoadResult(settings, sources, tuple(problems), tuple(deprecations), tuple(ignored))

    @staticmethod
    def _infer(
        item: Declared, trigger: Declared, values: dict[str, Any], sources: dict[str, Source]
    ) -> None:
        """Give ``item`` its inferred value when it is unset and its trigger is set."""
        inference = item.spec.inferred
        assert inference is not None  # only inferring items are passed
        if sources[item.name].kind is not SourceKind.DEFAULT:
            return
        trigger_source = sources[trigger.name]
        if trigger_source.kind in (SourceKind.DEFAULT, SourceKind.INFERRED):
            return
        values[item.name] = inference.value
        variable = trigger_source.variable or trigger.env
        sources[item.name] = Source(SourceKind.INFERRED, variable, detail=inference.reason)

    def _load_item(
        self,
        item: Declared,
        values: dict[str, Any],
        sources: dict[str, Source],
        problems: list[Problem],
        deprecations: list[DeprecatedUse],
        ignored: list[IgnoredValue],
    ) -> None:
        """Find, structure and check one set variable, recording what happened."""
        found = self._lookup(item, deprecations, ignored)
        if isinstance(found, Problem):
            problems.append(found)
            return
        if found is None:  # every value set carried no setting: the default stays
            if sources[item.name].kind is SourceKind.DEFAULT:
                detail = f"{ignored[-1].variable}={ignored[-1].value!r} ignored"
                sources[item.name] = Source(SourceKind.DEFAULT, detail=detail)
            return
        raw, source = found
        value = self._structure(item, raw, source)
        if isinstance(value, Problem):
            problems.append(value)
            return
        if sources[item.name].kind is SourceKind.ENTRYPOINT and values[item.name] != value:
            shown = format_value(values[item.name])
            expected = f"expected {shown}, which the entrypoint sets (repeat it or unset it)"
            problems.append(_problem(item, raw, source, expected))
            return
        values[item.name] = value
        sources[item.name] = source

    def _lookup(
        self, item: Declared, deprecations: list[DeprecatedUse], ignored: list[IgnoredValue]
    ) -> tuple[str, Source] | Problem | None:
        """Find the winning raw value of one setting across all layers.

        Returns the value as the new setting reads it (after any value mapping), a
        problem, or None when every value set was ignored (an old label).
        """
        candidates: list[tuple[str, Source]] = []
        keep = not item.spec.secret  # a secret's typed value is never kept
        for name in item.names:
            if name in self._env_names:
                kind = SourceKind.ENV if name == item.env else SourceKind.DEPRECATED
                raw = self._raw(name)
                candidates.append((raw, Source(kind, name, typed=raw if keep else None)))
        if item.file_var in self._names:
            file_path = self._raw(item.file_var)
            from_file = read_value_file(item.file_var, file_path)
            if isinstance(from_file, Problem):
                return from_file
            source = Source(SourceKind.SECRET_FILE, item.file_var, path=file_path)
            candidates.append((from_file, source))
        if self._dotenv:
            path = str(self.env_file)
            for name in item.names:
                if name in self._dotenv and name not in self._env_names:
                    raw = self._raw(name)
                    source = Source(
                        SourceKind.DOTENV,
                        name,
                        path=path,
                        deprecated=name != item.env,
                        typed=raw if keep else None,
                    )
                    candidates.append((raw, source))
        read = candidates
        if item.maps:
            read = []
            for raw, source in candidates:
                mapped = self._map(item, raw, source)
                if isinstance(mapped, Problem):
                    return mapped
                if isinstance(mapped, Ignored):
                    assert source.variable is not None  # set for every non-default source
                    shown = format_value(raw, secret=item.spec.secret)
                    ignored.append(IgnoredValue(source.variable, shown, item.env, mapped.reason))
                    continue
                read.append(mapped)
        if not read:
            return None
        winner_raw, winner = read[0]
        for raw, source in read:
            changed = source.read_as is not None
            if (source.variable == item.env and not changed) or (
                source.kind is SourceKind.SECRET_FILE
            ):
                continue
            assert source.variable is not None  # set for every non-default source
            typed = source.typed if changed else None
            if source is winner:
                deprecations.append(
                    DeprecatedUse(source.variable, item.env, value=typed, read_as=source.read_as)
                )
            elif source.variable != item.env:
                differ = raw.strip() != winner_raw.strip()
                deprecations.append(
                    DeprecatedUse(
                        source.variable,
                        item.env,
                        winner.variable,
                        differ,
                        value=typed,
                        read_as=source.read_as,
                    )
                )
        return winner_raw, winner

    @staticmethod
    def _map(item: Declared, raw: str, source: Source) -> tuple[str, Source] | Ignored | Problem:
        """Apply the value mapping declared for the name read (if any).

        A changed value comes back with a source that records what it was read as.
        """
        assert source.variable is not None  # candidates always name their variable
        mapping = item.maps.get(source.variable)
        if mapping is None:
            return raw, source
        try:
            mapped = mapping(raw)
        except ValueError as exc:
            return _problem(item, raw, source, str(exc))
        if isinstance(mapped, Ignored) or mapped.strip() == raw.strip():
            return mapped if isinstance(mapped, Ignored) else (raw, source)
        read_as = None if item.spec.secret else mapped
        return mapped, attrs.evolve(source, read_as=read_as)

    def _structure(self, item: Declared, raw: str, source: Source) -> Any:
        """Structure and check one value; a ``Problem`` names the variable actually set."""
        if not raw.strip():
            default = item.default_text()
            default = default if default.startswith("(") else f"({default})"
            expected = (
                f"set but empty; expected {expectation(item.attribute.type)}, "
                f"or unset it to use the default {default}"
            )
            return _problem(item, raw, source, expected)
        try:
            if self._converter is None:
                value = _structure_hooks(item.owner)[item.name](raw)
            else:
                value = structure(self._converter, raw, item.attribute.type)
            item.check(value)
        except ValueError as exc:
            return _problem(item, raw, source, str(exc))
        return value


def _construct(cls: type[S], values: Mapping[str, Any]) -> tuple[S | None, list[Problem]]:
    """Build the instance; only a derived default can still fail its check here."""
    try:
        return cls(**values), []
    except InvalidSetting as exc:
        item = next(i for i in declared(cls) if i.name == exc.field)
        expected = (
            f"the default ({item.spec.default_doc or item.default_text()}) is not valid "
            f"here: {exc.expected}; set {item.env}"
        )
        return None, [Problem(item.env, None, expected)]


def _problem(item: Declared, raw: str, source: Source, expected: str) -> Problem:
    """A problem naming the variable the user set, with the value masked if secret.

    A value read from a ``_FILE`` is never shown (such files hold secrets, and the
    path could name any file); the problem names the variable and the file instead.
    """
    variable = source.variable or item.env
    if source.kind is SourceKind.SECRET_FILE:
        return Problem(variable, source.path, f"the file's content: {expected}")
    typed = source.typed if source.typed is not None else raw
    # An empty value gives nothing away, even for a secret.
    shown = format_value(typed, secret=item.spec.secret) if typed.strip() else typed
    return Problem(variable, shown, expected, normalised=source.read_as)
