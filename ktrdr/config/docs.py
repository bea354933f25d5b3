"""``docs/configuration.md``, rendered from the settings declarations.

The page is generated so it cannot drift from the code: ``ktrdr config docs``
writes it, and a test fails when the committed file differs from a fresh render.
The output depends on the declarations only (never on this machine or its
environment).
"""

from __future__ import annotations

from typing import Any

from ktrdr.config.bundles import COMPONENTS, settings_classes
from ktrdr.config.converter import expectation
from ktrdr.config.deprecation import REMOVAL_DATE, REMOVAL_VERSION, value_mappings
from ktrdr.config.fields import FILE_SUFFIX, Declared, declared, format_value
from ktrdr.config.loader import DEFAULT_ENV_FILE
from ktrdr.config.settings import ALL_SETTINGS
from ktrdr.config.unknown import OTHER_COMPONENTS, RETIRED

DOCS_PATH = "docs/configuration.md"

_INTRO = f"""\
# Configuration

<!-- Generated from ktrdr/config/settings.py by `ktrdr config docs`; do not edit. -->

Every ktrdr process is configured by environment variables named
`KTRDR_<CONCERN>_<FIELD>`. Validate a configuration without starting anything with
`ktrdr config check --component worker|backend|all`, and see the effective values and
where each came from with `ktrdr config show --component ... --sources`.

## Where values come from

Highest precedence first:

1. the process environment: the variable's name, then its deprecated names by
   generation, `KTRDR_`-prefixed old names before unprefixed ones (the order listed
   below);
2. `<NAME>{FILE_SUFFIX}`: the path of a file holding the value (for docker secrets; a
   trailing newline is ignored; a missing, unreadable or directory path is an error);
3. the dotenv file `{DEFAULT_ENV_FILE}` in the working directory, if it exists (values are
   taken literally: `${{VAR}}` is not expanded);
4. the default below.

A variable that is set but empty is an error (unset it to get the default).

## Value formats

- Durations: `90` (seconds), `90s`, `250ms`, `5m`, `1h`, `2d`; never negative.
- Booleans: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, any case.
- Choices are case-insensitive.

## Strictness (`KTRDR_ENV`)

| `KTRDR_ENV` | Insecure default secrets | Unknown `KTRDR_*` variables, settings without effect |
|---|---|---|
| `development` (default) | boxed warning, unless acknowledged | warning, with a suggestion |
| `test` | accepted silently (tests use the development secrets) | error |
| `production` | error (acknowledging does not help) | error |

`KTRDR_ACKNOWLEDGE_INSECURE_DEFAULTS=true` silences the development warning only.
A setting without effect is one set while the condition it applies under does not
hold (a PostgreSQL setting while `KTRDR_DB_ENGINE=sqlite`). In every mode, an old
value that carries no setting (an old label) and a retired variable are warnings,
and variables that another ktrdr component reads are mentioned once, never an error.

Each component is checked only for the secrets it uses: workers never for the
database password, and the database password only when `KTRDR_DB_ENGINE=postgresql`.
"""


def render_markdown() -> str:
    """The whole page, ending with one newline."""
    parts = [
        _INTRO,
        _components(),
        *(_section(cls) for cls in ALL_SETTINGS),
        _deprecated(),
        _old_values(),
        _others(),
    ]
    return "\n".join(parts).rstrip("\n") + "\n"


def _components() -> str:
    lines = ["## Components", ""]
    for component in COMPONENTS:
        names = ", ".join(f"`{cls.__name__}`" for cls in settings_classes(component).values())
        lines.append(f"- `{component}`: {names}")
    return "\n".join(lines) + "\n"


def _section(cls: type[Any]) -> str:
    doc = (cls.__doc__ or "").strip().splitlines()[0]
    title = f"## `{cls.__name__}`"
    if cls.PREFIX != "KTRDR_":
        title += f" (`{cls.PREFIX}*`)"
    lines = [
        title,
        "",
        doc,
        "",
        "| Variable | Default | Accepts | Deprecated names | Description |",
        "|---|---|---|---|---|",
    ]
    lines.extend(_row(item) for item in declared(cls))
    return "\n".join(lines) + "\n"


def _row(item: Declared) -> str:
    default = item.default_text()
    default_cell = default if default.startswith("(") else f"`{default}`"
    accepts = item.spec.check.expected if item.spec.check else expectation(item.attribute.type)
    old = ", ".join(f"`{name}`" for name in item.names[1:])
    notes = [item.spec.help]
    if item.spec.unit:
        notes.append(f"unit: {item.spec.unit}")
    if item.spec.secret:
        notes.append("secret, never shown")
    if item.spec.insecure_default:
        notes.append("the default is insecure: refused in production")
    if item.spec.applies_when is not None:
        field, value = item.spec.applies_when
        notes.append(f"applies only when `{_env_of(item, field)}={format_value(value)}`")
    if item.spec.inferred is not None:
        inferred = item.spec.inferred
        notes.append(
            f"`{format_value(inferred.value)}` when `{_env_of(item, inferred.when)}` "
            "(or an old name of it) is set and this is not"
        )
    cells = [f"`{item.env}`", default_cell, accepts, old, "; ".join(notes)]
    return "| " + " | ".join(cells) + " |"


def _env_of(item: Declared, field: str) -> str:
    """The variable of another field of ``item``'s class."""
    return next(other.env for other in declared(item.owner) if other.name == field)


def _old_values() -> str:
    lines = [
        "## Old values",
        "",
        "Some old names carried values the new settings spell differently; these are "
        "read as follows (the warning quotes both, and `ktrdr config migrate` rewrites "
        "them). A value no mapping can carry is an error naming the variable and what "
        "the setting accepts.",
        "",
        "| Names | Old value | Read as |",
        "|---|---|---|",
    ]
    lines.extend(f"| {names} | {mapping} | `{new}` |" for names, mapping, new in value_mappings())
    return "\n".join(lines) + "\n"


def _others() -> str:
    lines = [
        "## Other ktrdr components' variables",
        "",
        "These `KTRDR_*` variables are read by other parts of ktrdr. Set in a worker's "
        "or the backend's environment they are mentioned once and never an error, in "
        "any mode.",
        "",
        "| Component | Variables |",
        "|---|---|",
    ]
    for component in OTHER_COMPONENTS:
        names = [f"`{name}`" for name in component.names]
        names.extend(f"`{prefix}*`" for prefix in component.prefixes)
        lines.append(f"| {component.name} | {', '.join(names)} |")
    lines += [
        "",
        "## Retired variables",
        "",
        "Variables of the system ktrdr 0.4 replaces whose behaviour is gone: each set "
        "one is a warning, in any mode, naming what replaced it.",
        "",
        "| Variable | Why |",
        "|---|---|",
    ]
    lines.extend(f"| `{name}` | {why} |" for name, why in RETIRED.items())
    return "\n".join(lines) + "\n"


def _deprecated() -> str:
    lines = [
        "## Deprecated names",
        "",
        f"Deprecated names keep working until ktrdr {REMOVAL_VERSION} (not before "
        f"{REMOVAL_DATE}). Using one prints a warning naming the replacement; when both "
        "names are set, the new one wins and the warning says the old one was ignored.",
        "",
        "| Deprecated name | Replacement |",
        "|---|---|",
    ]
    for cls in ALL_SETTINGS:
        for item in declared(cls):
            lines.extend(f"| `{old}` | `{item.env}` |" for old in item.names[1:])
    return "\n".join(lines) + "\n"
