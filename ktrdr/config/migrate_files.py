"""``ktrdr config migrate`` on files: env files and compose files, edited line by line.

The edits :func:`ktrdr.config.migrate.plan` decides are applied to the file's own
lines, so everything a person wrote stays as it was: comments, blank lines, order,
quoting, ``export``, YAML anchors, aliases and merge keys. python-dotenv's parser
reads env files (as the loader's dotenv reading does); ruamel.yaml parses compose
files in round-trip mode, which keeps each key's line and column, and re-parses the
result to prove it is still the same document with the edits. A removed variable is
commented out, never deleted, so a person can see what went and why.

Only ktrdr services of a compose file are touched (image or command naming ktrdr):
a worker (command naming a worker, or a worker type set) or the backend (command or
service name naming the backend). Any other service, ktrdr's or not, is left alone.
Nothing is written here except by :func:`write_atomically`.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
from dotenv.parser import parse_stream
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from ktrdr.config.bundles import Component
from ktrdr.config.migrate import Action, Entry, plan
from ktrdr.errors import MigrationError

__all__ = [
    "Change",
    "Migration",
    "MigrationError",
    "migrate_compose",
    "migrate_env",
    "migrate_file",
    "read_text",
    "write_atomically",
]

_MARK = "ktrdr config migrate"
_PLAIN_YAML = re.compile(r"[A-Za-z0-9_./@%+-][A-Za-z0-9_./:@%+=-]*")
_PLAIN_ENV = re.compile(r"[^\s'\"#\\$`]*")
_YAML_NOT_STRINGS = re.compile(
    r"(?i)(true|false|yes|no|on|off|null|~|[-+]?(\d[\d_]*(\.\d*)?|\.\d+)(e[-+]?\d+)?)"
)
_WORKER_TYPE_NAMES = frozenset({"KTRDR_WORKER_TYPE", "WORKER_TYPE"})


@attrs.frozen
class Change:
    """One change, where it is (``line 12``, ``services.backend.environment``), and what."""

    where: str
    text: str


@attrs.frozen
class Migration:
    """The migrated text of one file, every change made, and what was left alone."""

    kind: str
    original: str
    text: str
    changes: tuple[Change, ...]
    notes: tuple[Change, ...]

    @property
    def changed(self) -> bool:
        """Whether anything would change."""
        return bool(self.changes)


def read_text(path: Path) -> str:
    """The file's text, exactly (line endings kept), or a one-line ``MigrationError``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MigrationError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise MigrationError(f"cannot read {path}: not UTF-8 text") from None


def migrate_file(path: Path, text: str, component: Component | None = None) -> Migration:
    """Migrate ``text`` as an env or compose file, judged by the name and then the content.

    ``component`` fixes which component reads the variables; by default an env file
    is read as ``all`` and each compose service as what its command says it runs.
    """
    if path.suffix.lower() in (".yml", ".yaml"):
        return migrate_compose(text, str(path), component)
    try:
        return migrate_env(text, str(path), component or "all")
    except MigrationError:
        if _looks_like_compose(text):
            return migrate_compose(text, str(path), component)
        raise


def _looks_like_compose(text: str) -> bool:
    try:
        data = _yaml().load(text)
    except YAMLError:
        return False
    return isinstance(data, CommentedMap) and isinstance(data.get("services"), CommentedMap)


# --- edits on lines ---------------------------------------------------------------


@attrs.define
class _Lines:
    """A text as lines, with replacements and insertions applied in one pass."""

    lines: list[str]
    replaced: dict[int, str] = attrs.field(factory=dict)
    inserted: dict[int, list[str]] = attrs.field(factory=dict)

    @classmethod
    def of(cls, text: str) -> _Lines:
        return cls(text.splitlines(keepends=True))

    def newline(self, index: int) -> str:
        line = self.lines[index] if index < len(self.lines) else ""
        return "\r\n" if line.endswith("\r\n") else "\n"

    def get(self, index: int) -> str:
        return self.replaced.get(index, self.lines[index])

    def text(self) -> str:
        out = []
        for index, line in enumerate(self.lines):
            out.extend(self.inserted.get(index, []))
            out.append(self.replaced.get(index, line))
        return "".join(out)


def _comment_out(line: str, newline: str) -> str:
    """``line`` as a comment at its own indentation, marked as removed by the migration."""
    body = line.rstrip("\r\n")
    indent = body[: len(body) - len(body.lstrip())]
    return f"{indent}# {body.lstrip()}  # removed by {_MARK}{newline}"


def _scalar_span(line: str, start: int, *, key: bool = False) -> tuple[int, str] | None:
    """``(end, style)`` of the scalar starting at ``start``; None when it is not editable.

    ``style`` is ``'``, ``"`` or ``""`` (plain). A plain mapping key ends at its
    ``:``. Anchors, aliases, tags and block scalars are not edited.
    """
    if start >= len(line):
        return None
    first = line[start]
    if first in "&*!|>[{":
        return None
    if first in "'\"":
        index = start + 1
        while index < len(line):
            char = line[index]
            if first == '"' and char == "\\":
                index += 2
                continue
            if char == first:
                if first == "'" and line[index + 1 : index + 2] == "'":
                    index += 2
                    continue
                return index + 1, first
            index += 1
        return None  # the scalar continues on the next line
    body = line.rstrip("\r\n")
    stop = re.search(r":(\s|$)" if key else r"\s#", body[start:])
    end = start + stop.start() if stop else len(body)
    return len(body[:end].rstrip()), ""


def _quote(value: str, style: str, plain: re.Pattern[str]) -> str:
    """``value`` in ``style``, or double quotes when plain would change its meaning.

    In YAML a plain ``8000`` or ``true`` is not a string, so those are quoted there.
    """
    if style == "'" and "'" not in value:
        return f"'{value}'"
    typed = plain is _PLAIN_YAML and _YAML_NOT_STRINGS.fullmatch(value)
    if style == "" and plain.fullmatch(value) and not typed:
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


# --- env files ----------------------------------------------------------------------


def migrate_env(text: str, where: str, component: Component) -> Migration:
    """Migrate an env (dotenv) file; a line that is not ``NAME=VALUE`` is an error."""
    bindings = []
    entries = []
    notes: list[Change] = []
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            line = binding.original.line
            message = f"{where} is not an env file: line {line} is not NAME=VALUE"
            raise MigrationError(message)
        if binding.key is not None:
            bindings.append(binding)
            entries.append(Entry(binding.key, binding.value))
    lines = _Lines.of(text)
    decided = plan(entries, component)
    changes: list[Change] = []
    for action in sorted(decided.actions, key=lambda a: a.entry):
        binding = bindings[action.entry]
        # The parser hands blank lines before a binding to the binding itself.
        string = binding.original.string
        body = string.lstrip()
        first = binding.original.line - 1 + string[: len(string) - len(body)].count("\n")
        count = max(1, body.count("\n"))
        done = _edit_env(lines, first, count, action)
        shown = action.text if done else f"{action.text} (not applied: edit it by hand)"
        (changes if done else notes).append(Change(f"line {first + 1}", shown))
    notes += [Change(where, note) for note in decided.notes]
    return Migration("env file", text, lines.text(), tuple(changes), tuple(notes))


_ENV_LINE = re.compile(
    r"(?P<lead>\s*(?:export\s+)?)(?P<key>[A-Za-z_][A-Za-z0-9_.]*)(?P<eq>\s*=\s*)"
)


def _edit_env(lines: _Lines, first: int, count: int, action: Action) -> bool:
    """Apply one action to an env file's lines; False when the line is not plain enough."""
    newline = lines.newline(first)
    line = lines.get(first)
    if action.kind == "remove":
        for index in range(first, first + count):
            lines.replaced[index] = _comment_out(lines.get(index), lines.newline(index))
        return True
    match = _ENV_LINE.match(line)
    if match is None:  # e.g. a quoted name: left for a person
        return False
    assert action.name is not None  # renames and insertions name their variable
    if action.kind == "insert":
        value = _quote(action.value or "", "", _PLAIN_ENV)
        new = f"{match['lead']}{action.name}={value}{newline}"
        lines.inserted.setdefault(first, []).append(new)
        return True
    start = match.end()
    span = _scalar_span(line, start) if count == 1 else None
    head = f"{match['lead']}{action.name}{match['eq']}"
    if action.value is None:
        lines.replaced[first] = head + line[start:]
    elif span is not None:
        end, style = span
        lines.replaced[first] = head + _quote(action.value, style, _PLAIN_ENV) + line[end:]
    else:  # a multi-line value becomes one line
        for index in range(first + 1, first + count):
            lines.replaced[index] = ""
        lines.replaced[first] = head + _quote(action.value, '"', _PLAIN_ENV) + newline
    return True


# --- compose files ------------------------------------------------------------------


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    return yaml


def migrate_compose(text: str, where: str, component: Component | None = None) -> Migration:
    """Migrate the ``environment`` of each ktrdr backend and worker service."""
    try:
        data = _yaml().load(text)
    except YAMLError as exc:
        raise MigrationError(f"{where} is not valid YAML: {_yaml_problem(exc)}") from None
    services = data.get("services") if isinstance(data, CommentedMap) else None
    if not isinstance(services, CommentedMap):
        raise MigrationError(f"{where} is not a compose file: no `services:` mapping")
    lines = _Lines.of(text)
    changes: list[Change] = []
    notes: list[Change] = []
    shared: dict[int, tuple[CommentedMap, set[Component]]] = {}
    for name, service in services.items():
        if not isinstance(service, CommentedMap):
            continue
        env_files = service.get("env_file")
        if env_files is not None and _is_ktrdr(service):
            files = (
                ", ".join(str(f) for f in env_files) if isinstance(env_files, list) else env_files
            )
            note = f"reads env_file {files}: run `ktrdr config migrate` on it too"
            notes.append(Change(f"services.{name}", note))
        if service.get("environment") is None:
            continue
        env = service["environment"]
        label = f"services.{name}.environment"
        kind = component or _service_component(name, service, env)
        if kind is None:
            if _is_ktrdr(service):
                notes.append(Change(label, "not a ktrdr backend or worker; left alone"))
            continue
        inherited: dict[str, str] = {}
        if isinstance(env, CommentedMap):
            for parent in _merged(env):
                inherited.update({str(k): str(v) for k, v in parent.items()})
                shared.setdefault(id(parent), (parent, set()))[1].add(kind)
        _migrate_block(env, kind, label, lines, changes, notes, inherited)
    for parent, kinds in shared.values():
        reader: Component = next(iter(kinds)) if len(kinds) == 1 else "all"
        label = f"line {parent.lc.line + 1} (merged mapping)"
        _migrate_block(parent, reader, label, lines, changes, notes, {})
    migrated = lines.text()
    if changes:
        try:
            _yaml().load(migrated)
        except YAMLError as exc:  # a bug here, never the user's: say so in one line
            message = f"migrating {where} would produce invalid YAML ({_yaml_problem(exc)})"
            raise MigrationError(message) from None
    return Migration("compose file", text, migrated, tuple(changes), tuple(notes))


def _yaml_problem(exc: YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} (line {mark.line + 1})" if mark is not None else str(problem)


def _merged(env: CommentedMap) -> list[CommentedMap]:
    """The mappings ``env`` merges in with ``<<:``."""
    merge: Iterable[Any] = getattr(env, "merge", None) or []
    found = []
    for entry in merge:
        parent = entry[1] if isinstance(entry, tuple) else entry
        if isinstance(parent, CommentedMap):
            found.append(parent)
    return found


def _words(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _is_ktrdr(service: CommentedMap) -> bool:
    text = " ".join(_words(service.get(key)) for key in ("image", "command", "entrypoint"))
    return "ktrdr" in text.lower()


def _env_names(env: Any) -> set[str]:
    if isinstance(env, CommentedMap):
        return {str(key) for key in env}
    if isinstance(env, CommentedSeq):
        return {str(item).split("=", 1)[0] for item in env}
    return set()


def _service_component(name: str, service: CommentedMap, env: Any) -> Component | None:
    """What a ktrdr service runs: a worker, the backend, or something else (None)."""
    if not _is_ktrdr(service):
        return None
    command = f"{_words(service.get('command'))} {_words(service.get('entrypoint'))}".lower()
    if "worker" in command or _env_names(env) & _WORKER_TYPE_NAMES:
        return "worker"
    if "backend" in command or "ktrdr.api" in command or "backend" in name.lower():
        return "backend"
    return None


def _migrate_block(
    env: Any,
    component: Component,
    label: str,
    lines: _Lines,
    changes: list[Change],
    notes: list[Change],
    inherited: dict[str, str],
) -> None:
    """Plan and apply the edits of one ``environment`` block (a mapping or a list)."""
    positions: list[tuple[int, int, int, int]] = []  # key line/col, value line/col
    entries: list[Entry] = []
    if isinstance(env, CommentedMap):
        for key, value in env.non_merged_items():
            line, col = env.lc.key(key)
            value_line, value_col = env.lc.value(key)
            entries.append(Entry(str(key), None if value is None else _scalar_text(value)))
            positions.append((line, col, value_line, value_col))
    elif isinstance(env, CommentedSeq):
        for index, item in enumerate(env):
            if not isinstance(item, str):
                notes.append(Change(label, "an entry that is not NAME=VALUE; left alone"))
                return
            line, col = env.lc.item(index)
            name, sep, value = item.partition("=")
            entries.append(Entry(name, value if sep else None))
            positions.append((line, col, line, col))
    else:
        return
    if len({p[0] for p in positions}) != len(positions):
        notes.append(Change(label, "entries share a line (flow style); left alone"))
        return
    decided = plan(entries, component, inherited=inherited)
    notes.extend(Change(label, note) for note in decided.notes)
    for action in sorted(decided.actions, key=lambda a: a.entry):
        done = _edit_compose(lines, env, entries[action.entry], positions[action.entry], action)
        text = action.text if done else f"{action.text} (not applied: edit it by hand)"
        (changes if done else notes).append(Change(label, text))


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _edit_compose(
    lines: _Lines, env: Any, entry: Entry, position: tuple[int, int, int, int], action: Action
) -> bool:
    """Apply one action to the lines; False when the entry cannot be edited as text."""
    line_index, col, value_line, value_col = position
    line = lines.get(line_index)
    newline = lines.newline(line_index)
    if action.kind == "remove":
        lines.replaced[line_index] = _comment_out(line, newline)
        return True
    assert action.name is not None  # renames and insertions name their variable
    indent = line[: len(line) - len(line.lstrip())]
    is_map = isinstance(env, CommentedMap)
    if action.kind == "insert":
        value = action.value or ""
        new = (
            f"{indent}{action.name}: {_quote(value, '', _PLAIN_YAML)}"
            if is_map
            else f"{indent}- {_quote(f'{action.name}={value}', '', _PLAIN_YAML)}"
        )
        lines.inserted.setdefault(line_index, []).append(new + newline)
        return True
    if is_map:
        key_span = _scalar_span(line, col, key=True)
        if key_span is None:
            return False
        end, style = key_span
        renamed = line[:col] + _quote(action.name, style, _PLAIN_YAML) + line[end:]
        if action.value is not None:
            if value_line != line_index:
                return False
            shift = len(renamed) - len(line)
            value_span = _scalar_span(renamed, value_col + shift)
            if value_span is None:
                return False
            value_end, value_style = value_span
            start = value_col + shift
            quoted = _quote(action.value, value_style, _PLAIN_YAML)
            renamed = renamed[:start] + quoted + renamed[value_end:]
        lines.replaced[line_index] = renamed
        return True
    span = _scalar_span(line, col)
    if span is None:
        return False
    end, style = span
    kept = action.value if action.value is not None else entry.value
    written = action.name if kept is None else f"{action.name}={kept}"
    lines.replaced[line_index] = line[:col] + _quote(written, style, _PLAIN_YAML) + line[end:]
    return True


# --- writing ------------------------------------------------------------------------


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path``'s content with ``text``: a temporary file, then one rename.

    A crash or an error leaves either the old file or the new one, never half of
    either; the file keeps its permissions, and a symbolic link keeps pointing at it.
    """
    target = Path(os.path.realpath(path))
    mode = stat.S_IMODE(target.stat().st_mode)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
