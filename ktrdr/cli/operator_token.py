"""The operator token the ``ktrdr`` command sends, and the file ``ktrdr up`` keeps it in.

The command looks for the token in this order, first found wins: ``--token``;
``KTRDR_AUTH_OPERATOR_TOKEN`` or ``KTRDR_AUTH_OPERATOR_TOKEN_FILE`` (through the
configuration loader, so the dotenv file counts too); the file ``ktrdr up`` writes,
``data/operator_token``; the development default (which only a development backend
accepts). ``ktrdr up`` without a configured token makes one and writes it to that
file atomically, readable by its owner only, so the commands the README prints work
from another terminal as they are.

Tokens are :class:`~ktrdr.config.Secret` values: this module never prints one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

import attrs

from ktrdr.config import (
    DEFAULT_ENV_FILE,
    AuthSettings,
    ConfigurationError,
    EnvLoader,
    Secret,
    SourceKind,
    all_env_names,
    env_name,
)
from ktrdr.config.checks import TOKEN

#: Where ``ktrdr up`` (with its default ``--data-dir``) writes the token it made.
TOKEN_FILE_NAME = "operator_token"  # noqa: S105 - a file name, not a password
DEFAULT_TOKEN_FILE = Path("data") / TOKEN_FILE_NAME
#: Bytes of randomness in a token ``ktrdr up`` makes (43 URL-safe characters).
TOKEN_BYTES = 32
_MAX_FILE_BYTES = 4096


@attrs.frozen
class OperatorToken:
    """A token and where it came from (``--token``, ``env ...``, ``file ...``), for messages."""

    secret: Secret
    source: str


def _operator_field() -> attrs.Attribute[Secret]:
    field: attrs.Attribute[Secret] = attrs.fields(AuthSettings).operator_token
    return field


def _checked(text: str, where: str) -> Secret:
    """``text`` as a token, or a ConfigurationError saying what ``where`` must hold."""
    value = text.strip()
    try:
        TOKEN(value)
    except ValueError as exc:
        raise ConfigurationError([f"{where}: {exc}"]) from None
    return Secret(value)


def from_configuration(
    environ: Mapping[str, str], *, env_file: str | Path | None = DEFAULT_ENV_FILE
) -> OperatorToken | None:
    """The token ``KTRDR_AUTH_OPERATOR_TOKEN`` (or its ``_FILE``) sets, or None when unset.

    Only the operator token's own variables are read from ``environ``; a problem
    with them is a ``ConfigurationError`` naming the variable.
    """
    names = set(all_env_names(_operator_field()))
    own = {name: value for name, value in environ.items() if name in names}
    result = EnvLoader(own, env_file=env_file).load_result(AuthSettings)
    problems = [str(p) for p in result.problems if p.variable in names]
    if problems:
        raise ConfigurationError(problems)
    source = result.sources["operator_token"]
    if result.settings is None or source.kind is SourceKind.DEFAULT:
        return None
    return OperatorToken(result.settings.operator_token, source.describe())


def read_token_file(path: Path) -> Secret:
    """The token in ``path``; a ConfigurationError when it is missing or unusable."""
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        message = f"{path}: cannot be read ({reason}); expected the operator token"
        raise ConfigurationError([message]) from None
    if len(data) > _MAX_FILE_BYTES:
        raise ConfigurationError([f"{path}: expected a file of at most {_MAX_FILE_BYTES} bytes"])
    return _checked(data.decode("utf-8", "replace"), str(path))


def resolve_operator_token(
    option: str | None,
    environ: Mapping[str, str],
    *,
    token_file: Path = DEFAULT_TOKEN_FILE,
    env_file: str | Path | None = DEFAULT_ENV_FILE,
) -> OperatorToken:
    """The token the command sends: ``--token``, the configuration, ``token_file``, the default."""
    if option is not None:
        return OperatorToken(_checked(option, "--token"), "--token")
    configured = from_configuration(environ, env_file=env_file)
    if configured is not None:
        return configured
    if token_file.is_file():
        return OperatorToken(read_token_file(token_file), f"file {token_file}")
    default = _operator_field().default
    assert isinstance(default, Secret)
    return OperatorToken(default, f"the development default; {env_name(_operator_field())} unset")


def _private(path: Path) -> bool:
    """Whether ``path`` is a regular file of ours that nobody else may read or write."""
    try:
        info = path.lstat()
    except OSError:
        return False
    mine = info.st_uid == os.getuid()
    return stat.S_ISREG(info.st_mode) and mine and not info.st_mode & 0o077


def write_token_file(path: Path, token: Secret) -> None:
    """Write ``token`` to ``path`` atomically (temp file, fsync, rename), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(token.reveal() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def ensure_token_file(path: Path) -> tuple[Secret, str]:
    """The token in ``path`` if it is private and valid; else a new one written there.

    Returns the token and what happened (``kept``, ``created``, or why it was replaced):
    a file others could read may have leaked, so it is never reused.
    """
    if _private(path):
        try:
            return read_token_file(path), "kept"
        except ConfigurationError:
            what = "replaced (it held no valid token)"
    elif path.exists() or path.is_symlink():
        what = "replaced (others could read it, or it was not a plain file of yours)"
    else:
        what = "created"
    if path.is_dir() and not path.is_symlink():
        message = f"{path}: is a directory; expected the operator token file (remove it)"
        raise ConfigurationError([message])
    token = Secret(secrets.token_urlsafe(TOKEN_BYTES))
    write_token_file(path, token)  # a rename: a symlink there is replaced, never followed
    return token, what


__all__ = [
    "DEFAULT_TOKEN_FILE",
    "TOKEN_FILE_NAME",
    "OperatorToken",
    "ensure_token_file",
    "from_configuration",
    "read_token_file",
    "resolve_operator_token",
    "write_token_file",
]
